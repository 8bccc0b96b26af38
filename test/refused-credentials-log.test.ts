// tier: unit
// Refused credentials leave nothing of themselves in the log, at every door, in process: a regcache with
// PROXY_AUTH whose whole log is captured gets a wrong password as Authorization (admin endpoints on the
// proxy port and on ADMIN_PORT, the mirror) and as Proxy-Authorization (an absolute-URI request and a
// CONNECT). Each refusal is logged with `credentials: wrong`; neither the header, its Base64 nor the
// password is anywhere in the log (issue 20: writing the refused header into the line went unnoticed,
// since the other tests only looked for the right password).
import assert from 'node:assert/strict';
import path from 'node:path';
import { Writable } from 'node:stream';
import { after, before, describe, it } from 'node:test';
import { pino } from 'pino';
import { startProxy, type RunningProxy } from '../src/assembly/proxy.js';
import { loadConfig } from '../src/config/config.js';
import type { Logger } from '../src/telemetry/log.js';
import { freePort } from './harness/ports.js';
import { waitFor } from './harness/proc.js';
import { TmpDirs } from './harness/tmp.js';
import { basic } from './support/credentials.js';
import { request } from './support/plain-http.js';
import { proxyExchange } from './support/raw-socket.js';

const PASSWORD = 'Wr0ng-guess-7f3a';
const WRONG = basic('ops', PASSWORD);

describe('refused credentials in the log', () => {
  const tmp = new TmpDirs();
  const written: string[] = [];
  let proxy: RunningProxy;

  before(async () => {
    const root = await tmp.make('regcache-refused-log');
    const log = pino({ level: 'debug' }, new Writable({ write: (chunk: Buffer, _e, done) => (written.push(chunk.toString()), done()) })) as Logger;
    const env = {
      PORT: '0',
      MIRROR_PORT: String(await freePort()),
      ADMIN_PORT: String(await freePort()),
      PROXY_AUTH: 'ops:ops-pw',
      CA_DIR: path.join(root, 'certs'),
      CACHE_DIR: path.join(root, 'cache'),
    };
    proxy = await startProxy(loadConfig(env), log);
  });
  after(async () => {
    await proxy?.close(0);
    await tmp.cleanup();
  });

  it('logs each refusal as wrong credentials, and nothing of the header at any door', async () => {
    const { proxy: port, admin, mirror } = proxy.ports;
    for (const p of [port, admin!]) assert.equal((await request(p, '/metrics', { headers: { authorization: WRONG } })).status, 401, `admin door on ${p}`);
    assert.equal((await request(mirror!.port, '/v2/', { headers: { authorization: WRONG } })).status, 401, 'mirror door');
    const forward = await proxyExchange(port, `GET http://registry.test/v2/ HTTP/1.1\r\nHost: registry.test\r\nProxy-Authorization: ${WRONG}\r\n\r\n`);
    assert.match(forward, /^HTTP\/1\.1 407/, 'proxy door, absolute URI');
    const connect = await proxyExchange(port, `CONNECT registry.test:443 HTTP/1.1\r\nHost: registry.test:443\r\nProxy-Authorization: ${WRONG}\r\n\r\n`);
    assert.match(connect, /^HTTP\/1\.1 407/, 'proxy door, CONNECT');

    const lines = () => written.join('').split('\n').filter(Boolean);
    const refusals = () => lines().filter((l) => /credentials: wrong|"credentials":"wrong"/.test(l));
    await waitFor(async () => refusals().length >= 5, { timeoutMs: 5000, what: `a refusal line per door:\n${refusals().join('\n')}` });
    for (const secret of [PASSWORD, WRONG.slice('Basic '.length), Buffer.from(PASSWORD).toString('base64').slice(0, 12)])
      assert.ok(
        !lines().some((l) => l.includes(secret)),
        `${secret} is in the log:\n${lines()
          .filter((l) => l.includes(secret))
          .join('\n')}`,
      );
  });
});
