// tier: unit
// A fill and its readers, in process against a real store directory: bounded memory for stalled
// readers, the withheld last byte, and no joining a failed fill.
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import { PassThrough } from 'node:stream';
import { once } from 'node:events';
import { after, before, describe, it } from 'node:test';
import { LocalStore } from '../src/cache/local/local-store.js';
import { Fill } from '../src/cache/fill.js';
import { FillReader } from '../src/cache/fill-reader.js';
import { RING_BUFFERS } from '../src/cache/ring-writer.js';
import { TmpDirs } from './harness/tmp.js';
import { Sink } from './support/sink.js';

const NO_PROVENANCE = { ref: null, tag: null };
const digestOf = (data: Buffer): string => 'sha256:' + crypto.createHash('sha256').update(data).digest('hex');
const settled = (fill: Fill): Promise<unknown> => (fill.settled ? Promise.resolve() : once(fill, 'settled'));

async function drain(reader: FillReader): Promise<Buffer> {
  const sink = new Sink();
  await reader.sendTo(sink, () => undefined);
  return sink.data;
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

  /** A fill of `data` (under `digest`) whose upstream body the test writes, acquired for one reader. */
  const startFill = async (data: Buffer, digest = digestOf(data)): Promise<{ body: PassThrough; fill: Fill }> => {
    const body = new PassThrough();
    const fill = await Fill.start(store, 'blob', digest, 'application/octet-stream', data.length, body, NO_PROVENANCE);
    assert.ok(fill.acquire());
    return { body, fill };
  };

  it('keeps a stalled reader to its ring of buffers, whatever the fill has written', async () => {
    const data = crypto.randomBytes(24 * 1024 * 1024);
    const { body, fill } = await startFill(data);
    const sink = new Sink({ stalled: true }); // a client that stopped reading
    let handed = 0;
    const sent = new FillReader(fill, 0, null).sendTo(sink, (n) => (handed += n));
    // Upstream bytes trickling in: many 'progress' events, each a chance to read ahead of the consumer.
    for (let off = 0; off < data.length; off += 256 * 1024) {
      body.write(data.subarray(off, off + 256 * 1024));
      await new Promise((resolve) => setTimeout(resolve, 1));
    }
    body.end();
    await settled(fill);
    assert.equal(fill.state, 'committed');
    assert.ok(handed <= RING_BUFFERS * 256 * 1024, `a stalled reader read ${handed} bytes`);
    sink.resume();
    await sent;
    assert.ok(sink.data.equals(data));
  });

  it('sends every byte intact to a consumer that calls back late, while the fill grows', async () => {
    const data = crypto.randomBytes(6 * 1024 * 1024 + 7);
    const { body, fill } = await startFill(data);
    const sink = new Sink({ delayMs: 1 });
    let counted = 0;
    const sent = new FillReader(fill, 1000, null).sendTo(sink, (n) => (counted += n));
    for (let off = 0; off < data.length; off += 100_000) {
      body.write(data.subarray(off, off + 100_000));
      await new Promise((resolve) => setImmediate(resolve));
    }
    body.end();
    await sent;
    assert.ok(sink.data.equals(data.subarray(1000)));
    assert.equal(counted, data.length - 1000);
  });

  it('holds back the last byte of a range until the digest is verified', async () => {
    const data = crypto.randomBytes(4000);
    const { body, fill } = await startFill(data);
    const sink = new Sink();
    const sent = new FillReader(fill, 0, 99).sendTo(sink, () => undefined);
    body.write(data.subarray(0, 1000));
    await new Promise((resolve) => setTimeout(resolve, 100));
    assert.equal(sink.data.length, 99, 'all but the last byte of the range before verification');
    assert.equal(sink.writableEnded, false);
    body.end(data.subarray(1000));
    await sent;
    assert.ok(sink.writableFinished);
    assert.ok(sink.data.equals(data.subarray(0, 100)));
  });

  it('stops reading when the client leaves, and releases the fill', async () => {
    const data = crypto.randomBytes(4000);
    const { body, fill } = await startFill(data);
    const sink = new Sink();
    const sent = new FillReader(fill, 0, null).sendTo(sink, () => undefined);
    body.write(data.subarray(0, 1000));
    await new Promise((resolve) => setTimeout(resolve, 50));
    sink.destroy(); // waiting for more of the fill when the client goes
    await sent;
    body.end(data.subarray(1000));
    await settled(fill);
    assert.equal(fill.state, 'committed');
    assert.equal(fill.acquire(), false, 'no reader left: the fill closed its spool');
  });

  it('cuts a ranged reader when the fill fails, and lets no one join the failed fill', async () => {
    const data = crypto.randomBytes(4000);
    const { body, fill } = await startFill(data, digestOf(Buffer.from('something else')));
    const reader = new FillReader(fill, 0, 99);
    const ended = drain(reader);
    body.end(data);
    await assert.rejects(ended, /hash to/);
    assert.equal(fill.state, 'failed');
    assert.equal(fill.acquire(), false);
    assert.equal(await store.lookup('blob', fill.digest), null);
  });
});
