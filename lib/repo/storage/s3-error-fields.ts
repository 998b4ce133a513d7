// What the AWS SDK's errors carry, read without its types: the error's name, the HTTP status, and
// the network error code (on the error or its causes). Shared by the S3 storage and its range reader.

export function errorName(error: unknown): string | undefined {
  return (error as { name?: string }).name;
}

export function httpStatus(error: unknown): number | undefined {
  return (error as { $metadata?: { httpStatusCode?: number } }).$metadata?.httpStatusCode;
}

/** ECONNREFUSED, ENOTFOUND, … on the error or its cause (the SDK wraps some). */
export function networkCode(error: unknown): string | undefined {
  for (let at = error as { code?: unknown; cause?: unknown } | undefined, depth = 0; at && depth < 4; at = at.cause as typeof at, depth++) {
    if (typeof at.code === 'string' && /^E[A-Z]+$/.test(at.code)) return at.code;
  }
  return undefined;
}
