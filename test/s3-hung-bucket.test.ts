// tier: unit
// S3Bucket against a bucket that accepts connections and never answers (RGW under SIGSTOP): each attempt
// ends after the idle timeout counted from the request's start. Issue 25: a paused gateway turned new HITs
// into 503 after 26 s where the docs say about 20 s: the SDK arms a socket timeout of 6 s or more only
// 3 s into each request, so each of the two attempts lasted 13 s. Here the idle timeout is 400 ms: each
// attempt must end long before that 3 s deferral could even have armed the SDK's timer.
import assert from 'node:assert/strict';
import net from 'node:net';
import { after, before, describe, it } from 'node:test';
import { StoreUnavailableError } from '../src/cache/content-store.js';
import { S3Bucket } from '../src/cache/s3/s3-bucket.js';

const IDLE_MS = 400;
const SDK_DEFERRAL_MS = 3000; // @smithy/node-http-handler's DEFER_EVENT_LISTENER_TIME for socket timeouts

describe('S3Bucket against a hung bucket', () => {
  const attempts: { firstByte: number; closed: number }[] = [];
  const sockets = new Set<net.Socket>();
  let server: net.Server;
  const saved = { ...process.env };

  before(async () => {
    process.env.AWS_ACCESS_KEY_ID = 'HUNGTESTKEY';
    process.env.AWS_SECRET_ACCESS_KEY = 'hung-test-secret';
    process.env.AWS_REGION = 'us-east-1';
    server = net.createServer((socket) => {
      sockets.add(socket);
      const attempt = { firstByte: 0, closed: 0 };
      socket.once('data', () => {
        attempt.firstByte = Date.now();
        attempts.push(attempt);
      });
      socket.on('close', () => {
        attempt.closed = Date.now();
        sockets.delete(socket);
      });
      socket.on('error', () => undefined); // the client's reset: expected
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  });

  after(async () => {
    for (const s of sockets) s.destroy();
    await new Promise((resolve) => server.close(resolve));
    process.env = saved;
  });

  it('gives up each attempt after the idle timeout from its start, and says the bucket is unavailable', async () => {
    const port = (server.address() as net.AddressInfo).port;
    const bucket = await S3Bucket.create({
      bucket: 'hung',
      endpoint: `http://127.0.0.1:${port}`,
      forcePathStyle: true,
      display: 's3://hung/',
      idleTimeoutMs: IDLE_MS,
    });
    await assert.rejects(bucket.head('content/sha256/00'), (err: Error) => err instanceof StoreUnavailableError && /HeadObject/.test(err.message));
    assert.equal(attempts.length, 2, 'two attempts (MAX_ATTEMPTS)');
    for (let i = 0; i < 100 && attempts.some((a) => a.closed === 0); i++) await new Promise((resolve) => setTimeout(resolve, 10)); // the FIN's arrival
    for (const a of attempts) {
      assert.ok(a.closed > 0, 'the client closed the connection');
      const lasted = a.closed - a.firstByte;
      assert.ok(lasted >= IDLE_MS - 50, `not before the idle timeout (${lasted} ms)`);
      assert.ok(lasted < SDK_DEFERRAL_MS, `ended by regcache's timer, not the SDK's deferred one (${lasted} ms)`);
    }
  });
});
