// tier: unit
// ALLOWED_CLIENTS on the mirror (plain HTTP and HTTPS), in process: decided once per connection, yet every
// request of a refused connection is answered 403 and logged; an allowed connection's requests go on.
import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import { after, describe, it } from 'node:test';
import { Agent, request } from 'undici';
import { freePort } from './harness/ports.js';
import { waitFor } from './harness/proc.js';
import { requestLines } from './harness/regcache.js';
import { TmpDirs } from './harness/tmp.js';
import { startInProcessRegcache, type InProcessRegcache } from './support/in-process-regcache.js';

const REFUSED = 'client refused (ALLOWED_CLIENTS)';

describe('the mirror and ALLOWED_CLIENTS (in-process)', () => {
  const tmp = new TmpDirs();
  const running: InProcessRegcache[] = [];
  after(async () => {
    await Promise.all(running.map((r) => r.stop()));
    await tmp.cleanup();
  });

  const start = async (env: Record<string, string>) => {
    const proxy = await startInProcessRegcache({ dir: await tmp.make('regcache-mirror-clients'), env: { MIRROR_PORT: String(await freePort()), ...env } });
    running.push(proxy);
    return proxy;
  };

  /** Three requests over one kept-alive connection: their statuses, and how many connections were opened. */
  async function threeOnOneConnection(base: string, ca?: string): Promise<{ statuses: number[]; connections: number }> {
    let connections = 0;
    const agent = new Agent({
      connections: 1,
      connect: { ...(ca ? { ca, servername: 'mirror.test' } : {}) },
    }).on('connect', () => connections++);
    try {
      const statuses: number[] = [];
      for (let i = 0; i < 3; i++) {
        const res = await request(`${base}/v2/`, { dispatcher: agent });
        await res.body.text();
        statuses.push(res.statusCode);
      }
      return { statuses, connections };
    } finally {
      await agent.close();
    }
  }

  for (const tls of [false, true]) {
    const door = tls ? 'HTTPS' : 'plain HTTP';
    const env: Record<string, string> = tls ? { MIRROR_HOSTNAME: 'mirror.test' } : {};

    it(`refuses every request of a connection from outside the list (${door}), each with its log line`, async () => {
      const proxy = await start({ ...env, ALLOWED_CLIENTS: '10.0.0.0/8' });
      const base = `${tls ? 'https' : 'http'}://127.0.0.1:${proxy.mirrorPort}`;
      const { statuses, connections } = await threeOnOneConnection(base, tls ? await readFile(proxy.caFile, 'utf8') : undefined);
      assert.equal(connections, 1, 'one kept-alive connection');
      assert.deepEqual(statuses, [403, 403, 403]);
      const refusals = async () => (await proxy.logs()).filter((l) => l.msg === REFUSED);
      await waitFor(async () => (await refusals()).length === 3, { timeoutMs: 5000, what: 'three refusals logged' });
      const refused = await refusals();
      assert.ok(refused.every((l) => l.where === 'mirror' && String(l.client).endsWith('127.0.0.1')));
      const lines = await requestLines(proxy, (l) => l.cache === 'REJECTED', 3);
      assert.equal(lines.length, 3, 'an access line per request');
    });

    it(`answers an allowed connection's requests (${door})`, async () => {
      const proxy = await start({ ...env, ALLOWED_CLIENTS: '127.0.0.0/8,::1/128' });
      const base = `${tls ? 'https' : 'http'}://127.0.0.1:${proxy.mirrorPort}`;
      const { statuses, connections } = await threeOnOneConnection(base, tls ? await readFile(proxy.caFile, 'utf8') : undefined);
      assert.equal(connections, 1);
      assert.deepEqual(statuses, [200, 200, 200]);
      assert.ok(!(await proxy.logs()).some((l) => l.msg === REFUSED));
    });
  }
});
