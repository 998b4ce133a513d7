// The --s3-endpoint option, the same on every command that takes an s3:// repository URI.
export const s3EndpointOption = {
  type: 'string',
  describe: 'S3 endpoint URL for an s3:// repository (default: AWS_ENDPOINT_URL, the shared AWS config, or AWS S3)',
} as const;
