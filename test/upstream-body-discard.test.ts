// tier: unit
// An upstream body regcache will not read (a manifest past MANIFEST_MAX_SIZE, a token past its bound, a
// 5xx answered from the cache instead) is let go without ending the process: undici reports its own abort
// of an unread body as an 'error' event a tick later, which with no listener is an uncaught exception (the
// 60-minute soak of 2026-12-05 lost a worker to "Request aborted"). Real undici against a local server.
import assert from 'node:assert/strict';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { setTimeout as sleep } from 'node:timers/promises';
import { after, before, describe, it } from 'node:test';
import { request } from 'undici';
import { BodyTooLargeError, readBounded } from '../src/upstream/bounded-body.js';
import { discardBody } from '../src/upstream/upstream-client.js';

describe('an upstream body let go unread', () => {
  let server: http.Server;
  let url: string;
  const uncaught: Error[] = [];
  const monitor = (err: Error) => uncaught.push(err);

  before(async () => {
    server = http.createServer((_req, res) => {
      res.statusCode = 503;
      res.setHeader('content-length', '5000');
      res.end('x'.repeat(5000));
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    url = `http://127.0.0.1:${(server.address() as AddressInfo).port}/`;
    process.on('uncaughtExceptionMonitor', monitor);
  });
  after(() => {
    process.off('uncaughtExceptionMonitor', monitor);
    server.close();
  });

  it('is discarded with no uncaught "Request aborted", after the body had time to arrive', async () => {
    const res = await request(url);
    await sleep(50); // destroyed at once, undici defers its error past a listener's chance; later, it does not
    discardBody(res.body);
    await sleep(100);
    assert.deepEqual(
      uncaught.map((e) => e.message),
      [],
    );
    assert.equal(res.body.destroyed, true);
  });

  it('is discarded by a bounded read that refuses its announced length', async () => {
    const res = await request(url);
    await sleep(50);
    await assert.rejects(readBounded(res.body, 1000, 'a test body', res.headers['content-length']), BodyTooLargeError);
    await sleep(100);
    assert.deepEqual(
      uncaught.map((e) => e.message),
      [],
    );
  });
});
