// A fill and its readers, in process against a real store directory: bounded memory for stalled
// readers, the withheld last byte, and no joining a failed fill.
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import { PassThrough } from 'node:stream';
import { once } from 'node:events';
import { after, before, describe, it } from 'node:test';
import { LocalStore } from '../src/cache/local-store.js';
import { Fill } from '../src/cache/fill.js';
import { FillReader } from '../src/cache/fill-reader.js';
import { TmpDirs } from './harness/tmp.js';

const NO_PROVENANCE = { ref: null, tag: null };
const digestOf = (data: Buffer): string => 'sha256:' + crypto.createHash('sha256').update(data).digest('hex');
const settled = (fill: Fill): Promise<unknown> => (fill.settled ? Promise.resolve() : once(fill, 'settled'));

async function drain(reader: FillReader): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const chunk of reader) chunks.push(chunk as Buffer);
  return Buffer.concat(chunks);
}

describe('fill readers', () => {
  const tmp = new TmpDirs();
  let store: LocalStore;

  before(async () => {
    store = await LocalStore.open(await tmp.make('regcache-fill'));
  });
  after(async () => {
    await store.close();
    await tmp.cleanup();
  });

  it('keeps a stalled reader to its buffer, whatever the fill has written', async () => {
    const data = crypto.randomBytes(24 * 1024 * 1024);
    const body = new PassThrough();
    const fill = await Fill.start(store, 'blob', digestOf(data), 'application/octet-stream', data.length, body, NO_PROVENANCE);
    assert.ok(fill.acquire());
    const reader = new FillReader(fill, 0, null);
    reader.pause(); // nobody consumes
    reader.read(0); // but the stream has started
    // Upstream bytes trickling in: many 'progress' events, each a chance to read ahead of the consumer.
    for (let off = 0; off < data.length; off += 256 * 1024) {
      body.write(data.subarray(off, off + 256 * 1024));
      await new Promise((resolve) => setTimeout(resolve, 1));
    }
    body.end();
    await settled(fill);
    assert.equal(fill.state, 'committed');
    assert.ok(reader.readableLength <= 512 * 1024, `a stalled reader holds ${reader.readableLength} bytes in memory`);
    const received = await drain(reader);
    assert.ok(received.equals(data));
  });

  it('holds back the last byte of a range until the digest is verified', async () => {
    const data = crypto.randomBytes(4000);
    const body = new PassThrough();
    const fill = await Fill.start(store, 'blob', digestOf(data), 'application/octet-stream', data.length, body, NO_PROVENANCE);
    assert.ok(fill.acquire());
    const reader = new FillReader(fill, 0, 99);
    const chunks: Buffer[] = [];
    reader.on('data', (c: Buffer) => chunks.push(c));
    body.write(data.subarray(0, 1000));
    await new Promise((resolve) => setTimeout(resolve, 100));
    assert.equal(Buffer.concat(chunks).length, 99, 'all but the last byte of the range before verification');
    assert.equal(reader.readableEnded, false);
    body.end(data.subarray(1000));
    await once(reader, 'end');
    assert.ok(Buffer.concat(chunks).equals(data.subarray(0, 100)));
  });

  it('cuts a ranged reader when the fill fails, and lets no one join the failed fill', async () => {
    const data = crypto.randomBytes(4000);
    const body = new PassThrough();
    const fill = await Fill.start(store, 'blob', digestOf(Buffer.from('something else')), 'application/octet-stream', data.length, body, NO_PROVENANCE);
    assert.ok(fill.acquire());
    const reader = new FillReader(fill, 0, 99);
    const ended = drain(reader);
    body.end(data);
    await assert.rejects(ended, /hash to/);
    assert.equal(fill.state, 'failed');
    assert.equal(fill.acquire(), false);
    assert.equal(await store.lookup('blob', fill.digest), null);
  });
});
