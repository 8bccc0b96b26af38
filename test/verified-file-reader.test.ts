// tier: unit
// The verifying reader (issue 12, items 7-9) in process against temp files: a whole file or a range
// delivered only when the whole file hashes to its digest (the last byte held back until then), a changed
// or short file cut with an error, reads paced by the consumer. Through a real regcache:
// test/store-integrity.test.ts.
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import { open, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { CorruptContentError, FILE_CHUNK, FILE_RING_BUFFERS, VerifiedFileReader } from '../src/cache/verified-file-reader.js';
import { sleep } from './harness/proc.js';
import { TmpDirs } from './harness/tmp.js';
import { makeBlob } from './support/fake-registry.js';
import { Sink } from './support/sink.js';

const MiB = 1024 * 1024;
const sha256 = (data: Buffer): string => 'sha256:' + crypto.createHash('sha256').update(data).digest('hex');

/** Sends through the reader to a sink; what it delivered (every byte counted), and the error it ended with (if any). */
async function drain(reader: VerifiedFileReader, sink = new Sink()): Promise<{ data: Buffer; error: Error | null }> {
  let counted = 0;
  const error = await reader.sendTo(sink, { verify: true, onBytes: (n) => (counted += n) }).then(
    () => null,
    (err: Error) => err,
  );
  await new Promise((resolve) => setImmediate(resolve)); // writes in flight call back
  assert.equal(counted, sink.data.length, 'every byte sent was counted');
  return { data: sink.data, error };
}

describe('VerifiedFileReader (in-process, temp files)', () => {
  const tmp = new TmpDirs();
  let dir: string;
  // Not a multiple of the 1 MiB read chunk, so the last chunk is short.
  const data = makeBlob(3 * MiB + 12_345, 'verified-reader').data;
  const digest = sha256(data);
  const size = data.length;

  before(async () => {
    dir = await tmp.make('regcache-verified-reader');
  });
  after(() => tmp.cleanup());

  const fileWith = async (name: string, bytes: Buffer): Promise<string> => {
    const file = path.join(dir, name);
    await writeFile(file, bytes);
    return file;
  };
  const readerOver = async (file: string, start: number, end: number, claimedSize = size) => {
    const handle = await open(file, 'r');
    const content = {
      size: (await handle.stat()).size,
      read: (buffer: Buffer, length: number, position: number) => handle.read(buffer, 0, length, position).then((r) => r.bytesRead),
      close: () => handle.close(),
    };
    return { handle, reader: new VerifiedFileReader(content, { size: claimedSize, digest, start, end }) };
  };

  it('delivers the whole file when it hashes to its digest, and closes the file', async () => {
    const { handle, reader } = await readerOver(await fileWith('good', data), 0, size - 1);
    const r = await drain(reader);
    assert.equal(r.error, null);
    assert.ok(r.data.equals(data));
    assert.equal(handle.fd, -1, 'the reader closed its file');
  });

  it('delivers exactly a range from the middle, a range at the start, and the last byte alone', async () => {
    const file = await fileWith('good-ranges', data);
    for (const [start, end] of [
      [300_000, 1_000_000],
      [0, 99],
      [size - 1, size - 1],
      [262_144, 524_287], // exactly one read chunk
    ] as const) {
      const r = await drain((await readerOver(file, start, end)).reader);
      assert.equal(r.error, null, `${start}-${end}`);
      assert.ok(r.data.equals(data.subarray(start, end + 1)), `bytes ${start}-${end}`);
    }
  });

  it('holds back the last byte of a range until the whole file has hashed, and errors on a mismatch', async () => {
    const bad = Buffer.from(data);
    bad[size - 10]! ^= 0x01; // far beyond the range: only hashing the whole file can notice
    const { handle, reader } = await readerOver(await fileWith('bad-tail', bad), 0, 99);
    const r = await drain(reader);
    assert.ok(r.error instanceof CorruptContentError, `got ${String(r.error)}`);
    assert.match(r.error.message, /hash to sha256:[0-9a-f]{64}, not sha256:/);
    assert.ok(r.data.equals(data.subarray(0, 99)), 'every byte but the last of the range, never the last');
    assert.equal(handle.fd, -1, 'the reader closed its file');
  });

  it('never completes a whole-file read of a changed file: at most all but the last byte', async () => {
    const bad = Buffer.from(data);
    bad[1000]! ^= 0xff;
    const r = await drain((await readerOver(await fileWith('bad-head', bad), 0, size - 1)).reader);
    assert.ok(r.error instanceof CorruptContentError);
    assert.equal(r.data.length, size - 1);
  });

  it('errors on a file shorter than the size it was opened for', async () => {
    const r = await drain((await readerOver(await fileWith('short', data.subarray(0, 1_000_000)), 0, size - 1)).reader);
    assert.ok(r.error instanceof CorruptContentError);
    assert.match(r.error.message, /ends after 1000000 of \d+ bytes/);
    assert.ok(r.data.equals(data.subarray(0, 1_000_000)), 'what the file has, then the error: never the announced length');
  });

  it('reads only while its consumer takes data: a stalled one holds the ring, no more; its leaving closes the file', async () => {
    const { handle, reader } = await readerOver(await fileWith('stalled', data), 0, size - 1);
    const sink = new Sink({ stalled: true });
    let handed = 0;
    const sent = reader.sendTo(sink, { verify: true, onBytes: (n) => (handed += n) });
    await sleep(200);
    assert.ok(handed > 0, 'the first chunks were written');
    assert.ok(handed <= FILE_RING_BUFFERS * FILE_CHUNK && handed < size, `${handed} bytes read for a stalled consumer`);
    sink.destroy(); // the client leaves
    await sent;
    assert.equal(handle.fd, -1, 'the reader closed its file');
  });

  it('sends intact to a consumer that calls back late (no buffer reused before its write called back)', async () => {
    const r = await drain((await readerOver(await fileWith('late', data), 0, size - 1)).reader, new Sink({ delayMs: 2 }));
    assert.equal(r.error, null);
    assert.ok(r.data.equals(data));
  });

  it('unverified, sends exactly the range, reading only the range', async () => {
    const file = await fileWith('unverified', data);
    for (const [start, end] of [
      [0, size - 1],
      [300_000, 1_000_000],
      [size - 1, size - 1],
    ] as const) {
      const { handle, reader } = await readerOver(file, start, end);
      const sink = new Sink({ delayMs: 1 });
      let counted = 0;
      await reader.sendTo(sink, { verify: false, onBytes: (n) => (counted += n) });
      assert.ok(sink.data.equals(data.subarray(start, end + 1)), `bytes ${start}-${end}`);
      assert.equal(counted, end + 1 - start);
      assert.equal(handle.fd, -1, 'the reader closed its file');
    }
  });
});
