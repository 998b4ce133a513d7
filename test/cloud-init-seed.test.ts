// The NoCloud seed disk of `lazyboot run --user-data`: a FAT image labelled CIDATA holding the
// user-data verbatim and a meta-data with a fresh instance-id (and local-hostname, public-keys when given),
// read back with mtools; the QEMU arguments attach it read-only as a second virtio disk.
import path from 'node:path';
import test from 'ava';
import { execa } from 'execa';
import { dir } from 'tmp-promise';
import { buildSeedDisk, metaDataOf, seedDiskArgs } from '../vmm/cloud-init-seed.js';

test('the seed is a FAT disk labelled CIDATA with user-data and meta-data', async (t) => {
  const scratch = await dir({ unsafeCleanup: true, prefix: 'lazyboot-seed-test-' });
  t.teardown(() => scratch.cleanup());
  const userData = Buffer.from('#cloud-config\nwrite_files:\n  - path: /x\n    content: "é ü"\n');
  const image = await buildSeedDisk(scratch.path, { userData, hostname: 'ci-7' });
  t.is(path.dirname(image), scratch.path);
  const label = await execa('mlabel', ['-s', '-i', image, '::']);
  t.regex(label.stdout, /Volume label is CIDATA\b/);
  const files = await execa('mdir', ['-b', '-i', image, '::']);
  t.deepEqual(files.stdout.trim().split('\n').sort(), ['::/meta-data', '::/user-data']);
  const copied = await execa('mtype', ['-i', image, '::user-data'], { encoding: 'buffer', stripFinalNewline: false });
  t.true(Buffer.from(copied.stdout).equals(userData), 'user-data verbatim');
  const meta = (await execa('mtype', ['-i', image, '::meta-data'])).stdout;
  t.regex(meta, /^instance-id: lazyboot-[0-9a-f-]{36}\nlocal-hostname: ci-7$/);
});

test('every seed has its own instance-id (cloud-init runs each time); no local-hostname unless given', (t) => {
  const first = metaDataOf({ userData: Buffer.alloc(0) });
  t.not(first, metaDataOf({ userData: Buffer.alloc(0) }));
  t.notRegex(first, /local-hostname/);
  t.is(metaDataOf({ userData: Buffer.alloc(0), instanceId: 'i-1', hostname: 'h' }), 'instance-id: i-1\nlocal-hostname: h\n');
});

test('--ssh-key goes into meta-data as public-keys, quoted (a comment may hold any character)', (t) => {
  const key = 'ssh-ed25519 AAAAC3Nza ci: "x" #1';
  t.is(metaDataOf({ userData: Buffer.alloc(0), instanceId: 'i-1', publicKeys: [key] }), `instance-id: i-1\npublic-keys:\n  - "ssh-ed25519 AAAAC3Nza ci: \\"x\\" #1"\n`);
  t.notRegex(metaDataOf({ userData: Buffer.alloc(0), publicKeys: [] }), /public-keys/);
});

test('the seed is attached read-only, as a virtio disk that never boots', (t) => {
  const [blockdevFlag, node, deviceFlag, device] = seedDiskArgs('/tmp/x,y/seed.img');
  t.is(blockdevFlag, '-blockdev');
  t.deepEqual(JSON.parse(node!), { driver: 'raw', 'node-name': 'lazyboot-seed', 'read-only': true, file: { driver: 'file', filename: '/tmp/x,y/seed.img', 'read-only': true } });
  t.is(deviceFlag, '-device');
  t.like(JSON.parse(device!), { driver: 'virtio-blk-pci', drive: 'lazyboot-seed' });
  t.false('bootindex' in JSON.parse(device!));
});
