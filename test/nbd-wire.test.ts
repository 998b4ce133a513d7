// The NBD wire codec (lib/nbd/wire.ts): each header decodes to what was encoded, the byte layout
// matches the spec's tables (checked against hand-written bytes), and wrong magic is reported.
import test from 'ava';
import * as P from '../lib/nbd/protocol.js';
import * as W from '../lib/nbd/wire.js';

test('a request header has the spec layout and round-trips, offsets above 2^32 included', (t) => {
  const request = { type: P.CMD_WRITE, flags: P.CMD_FLAG_FUA, cookie: 0x0102030405060708n, offset: 5 * 2 ** 32 + 7, length: 65536 };
  const bytes = W.encodeRequest(request);
  t.is(bytes.length, W.REQUEST_HEADER_BYTES);
  t.is(bytes.toString('hex'), '25609513' + '0001' + '0001' + '0102030405060708' + '0000000500000007' + '00010000');
  t.deepEqual(W.decodeRequest(bytes), request);
  bytes.writeUInt32BE(0, 0);
  t.is(W.decodeRequest(bytes), undefined, 'bad magic');
});

test('simple replies and structured chunks have the spec layout', (t) => {
  t.is(W.encodeSimpleReply(9n, P.NBD_EIO).toString('hex'), '67446698' + '00000005' + '0000000000000009');
  t.deepEqual(W.decodeSimpleReply(W.encodeSimpleReply(9n, 0)), { errno: 0, cookie: 9n });
  t.is(W.decodeSimpleReply(W.encodeChunkHeader(9n, 0, 0, 0)), undefined, 'a chunk is not a simple reply');
  t.is(W.encodeChunkHeader(3n, P.REPLY_FLAG_DONE, P.REPLY_TYPE_NONE, 0).toString('hex'), '668e33ef' + '0001' + '0000' + '0000000000000003' + '00000000');
  const data = W.encodeDataChunkHeader(3n, 0, 2 ** 33, 512);
  t.is(data.toString('hex'), '668e33ef' + '0000' + '0001' + '0000000000000003' + '00000208' + '0000000200000000');
  const hole = W.encodeHoleChunk(3n, P.REPLY_FLAG_DONE, 4096, 8192);
  t.is(hole.toString('hex'), '668e33ef' + '0001' + '0002' + '0000000000000003' + '0000000c' + '0000000000001000' + '00002000');
  const error = W.encodeErrorChunk(3n, P.REPLY_FLAG_DONE, P.NBD_EINVAL, 'no');
  t.is(error.toString('hex'), '668e33ef' + '0001' + '8001' + '0000000000000003' + '00000008' + '00000016' + '0002' + Buffer.from('no').toString('hex'));
  t.is(W.encodeErrorChunk(1n, 0, P.NBD_EIO, 'x'.repeat(1000)).length, W.CHUNK_HEADER_BYTES + 6 + 200, 'long messages are cut');
  const status = W.encodeBlockStatusChunk(3n, P.REPLY_FLAG_DONE, 1, [{ length: 4096, flags: P.STATE_HOLE | P.STATE_ZERO }, { length: 512, flags: 0 }]);
  t.is(status.toString('hex'), '668e33ef' + '0001' + '0005' + '0000000000000003' + '00000014' + '00000001' + '00001000' + '00000003' + '00000200' + '00000000');
});

test('handshake: greeting, options and option replies round-trip; wrong magic is undefined', (t) => {
  const greeting = W.encodeGreeting(P.FLAG_FIXED_NEWSTYLE | P.FLAG_NO_ZEROES);
  t.is(greeting.toString('hex'), Buffer.from('NBDMAGICIHAVEOPT').toString('hex') + '0003');
  t.deepEqual(W.decodeGreeting(greeting), { handshakeFlags: 3 });
  t.deepEqual(W.decodeGreeting(Buffer.alloc(18)), { problem: 'not an NBD server (bad magic)' });
  const option = W.encodeOption(P.OPT_GO, Buffer.from('abc'));
  t.deepEqual(W.decodeOptionHeader(option), { option: P.OPT_GO, length: 3 });
  t.is(option.subarray(W.OPTION_HEADER_BYTES).toString(), 'abc');
  t.deepEqual(W.decodeOptionHeader(W.encodeOptionHeader(P.OPT_LIST, 1 << 30)), { option: P.OPT_LIST, length: 1 << 30 });
  t.is(W.decodeOptionHeader(Buffer.alloc(16)), undefined);
  const refusal = W.encodeOptionReply(P.OPT_GO, P.REP_ERR_UNKNOWN, Buffer.from('gone'));
  t.deepEqual(W.decodeOptionReplyHeader(refusal), { option: P.OPT_GO, type: P.REP_ERR_UNKNOWN >>> 0, length: 4 });
  t.true(W.isOptionError(W.decodeOptionReplyHeader(refusal)!.type));
  t.false(W.isOptionError(P.REP_ACK));
  t.is(W.decodeOptionReplyHeader(Buffer.alloc(20)), undefined);
});

test('option data: export requests, meta context requests and NBD_INFO payloads', (t) => {
  const request = W.encodeExportRequest('disk', [P.INFO_NAME, P.INFO_BLOCK_SIZE]);
  t.is(request.toString('hex'), '00000004' + Buffer.from('disk').toString('hex') + '0002' + '0001' + '0003');
  t.deepEqual(W.decodeExportRequest(request), { name: 'disk', infos: [P.INFO_NAME, P.INFO_BLOCK_SIZE] });
  t.is(W.decodeExportRequest(request.subarray(0, request.length - 1)), undefined, 'truncated');
  const meta = Buffer.concat([W.encodeExportRequest('disk').subarray(0, 8), Buffer.from([0, 0, 0, 1, 0, 0, 0, 15]), Buffer.from('base:allocation')]);
  t.deepEqual(W.decodeMetaContextRequest(meta), { exportName: 'disk', queries: ['base:allocation'] });
  t.is(W.decodeMetaContextRequest(meta.subarray(0, meta.length - 2)), undefined, 'truncated');
  for (const info of [
    { kind: 'export', size: 3 * 2 ** 32 + 512, transmissionFlags: P.TFLAG_HAS_FLAGS | P.TFLAG_READ_ONLY },
    { kind: 'name', name: 'disk' },
    { kind: 'block-size', limits: { minimum: 1, preferred: 4096, maximum: 32 * 1024 * 1024 } },
  ] as const) {
    t.deepEqual(W.decodeInfo(W.encodeInfo(info)), info);
  }
  t.deepEqual(W.decodeInfo(Buffer.from([0, 2, 0x41])), { kind: 'other', type: P.INFO_DESCRIPTION });
  t.is(W.encodeExportNameReply(2 ** 20, 3, false).length, 134);
  t.is(W.encodeExportNameReply(2 ** 20, 3, true).toString('hex'), '0000000000100000' + '0003');
  t.is(W.encodeExportListing('a', 'b').toString('hex'), '00000001' + '61' + '62');
  t.is(W.encodeMetaContext(1, 'base:allocation').readUInt32BE(0), 1);
});

test('names for log lines', (t) => {
  t.is(W.commandName(P.CMD_BLOCK_STATUS), 'NBD_CMD_BLOCK_STATUS');
  t.is(W.commandName(99), 'command 99');
  t.is(W.optionName(P.OPT_GO), 'NBD_OPT_GO');
  t.is(W.optionName(42), 'option 42');
  t.is(W.commandFlagNames(P.CMD_FLAG_FUA | P.CMD_FLAG_NO_HOLE), 'FUA|NO_HOLE');
  t.is(W.commandFlagNames(0x100 | P.CMD_FLAG_DF), 'DF|0x100');
  t.is(W.commandFlagNames(0), 'none');
});
