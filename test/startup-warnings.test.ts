// tier: unit
// What a server says before it serves (assembly/startup.ts), in process: the whole configuration at debug
// with its secrets redacted, one warning for each rpardini variable regcache does not read naming what
// replaces it, and a warning for an allowlisted registry that is a refused destination, by name or by the
// addresses its name resolves to.
import assert from 'node:assert/strict';
import path from 'node:path';
import { Writable } from 'node:stream';
import { after, describe, it } from 'node:test';
import { pino } from 'pino';
import { prepareStartup, warnAboutRefusedRegistries } from '../src/assembly/startup.js';
import { loadConfig, type Env } from '../src/config/config.js';
import type { Logger } from '../src/telemetry/log.js';
import { TmpDirs } from './harness/tmp.js';

interface Line {
  level: number;
  msg: string;
  [field: string]: unknown;
}

/** A logger at `level` whose lines are kept, parsed, in `lines`. */
function capturingLogger(level = 'debug'): { log: Logger; lines: Line[] } {
  const lines: Line[] = [];
  const sink = new Writable({
    write(chunk: Buffer, _encoding, done) {
      for (const text of chunk.toString().split('\n').filter(Boolean)) lines.push(JSON.parse(text) as Line);
      done();
    },
  });
  return { log: pino({ level }, sink) as Logger, lines };
}

const WARN = 40;
const DEBUG = 20;
const REFUSED = 'an allowlisted registry is a refused destination: list it in ALLOW_DESTINATIONS to reach it';

describe('startup', () => {
  const tmp = new TmpDirs();
  after(() => tmp.cleanup());

  it('logs the configuration at debug, secrets redacted, and warns once about each rpardini variable it does not read', async () => {
    const dir = await tmp.make('regcache-startup-warnings');
    const config = loadConfig({
      PORT: '0',
      MIRROR_PORT: '0',
      CA_DIR: path.join(dir, 'certs'),
      CACHE_DIR: path.join(dir, 'cache'),
      CONNECT_TO: '::127.0.0.1:', // every registry routed: no name is resolved here
      PROXY_AUTH: 'alice:s3cret-pw',
      AUTH_REGISTRIES: 'quay.io:robot:t0ken-pw',
      DEBUG: 'true',
      PROXY_READ_TIMEOUT: '120s',
      CLIENT_HEADER_TIMEOUT: '60s',
      ALLOW_OWN_AUTH: 'false',
      PROXY_CONNECT_SEND_TIMEOUT: '', // set to nothing: as good as unset
    });
    const { log, lines } = capturingLogger();
    await prepareStartup(config, log, []);

    const described = lines.filter((l) => l.msg === 'configuration');
    assert.equal(described.length, 1);
    assert.equal(described[0]!.level, DEBUG);
    const shown = described[0]!.config as Record<string, unknown>;
    assert.equal(shown.PROXY_READ_TIMEOUT, undefined, 'not a setting of regcache');
    assert.equal(shown.CONNECT_TO, '::127.0.0.1:');
    assert.equal(shown.PROXY_AUTH, '(inline users)');
    assert.doesNotMatch(JSON.stringify(lines), /s3cret-pw|t0ken-pw/);

    const retired = lines.filter((l) => l.level === WARN && typeof l.variable === 'string');
    assert.deepEqual(
      retired.map((l) => l.variable),
      ['DEBUG', 'ALLOW_OWN_AUTH', 'PROXY_READ_TIMEOUT', 'CLIENT_HEADER_TIMEOUT'],
    );
    for (const l of retired) {
      assert.ok(l.msg.startsWith(`${String(l.variable)} is a setting of rpardini/docker-registry-proxy that regcache does not read: `), l.msg);
      assert.ok(l.msg.endsWith(String(l.instead)));
    }
    const instead = Object.fromEntries(retired.map((l) => [l.variable, l.instead]));
    assert.match(String(instead.DEBUG), /LOG_LEVEL=debug/);
    assert.match(String(instead.PROXY_READ_TIMEOUT), /UPSTREAM_HEADERS_TIMEOUT.*UPSTREAM_IDLE_TIMEOUT/);
    assert.match(String(instead.CLIENT_HEADER_TIMEOUT), /CLIENT_HEADERS_TIMEOUT/);
  });

  it('says nothing of the configuration at info', async () => {
    const dir = await tmp.make('regcache-startup-info');
    const config = loadConfig({ PORT: '0', MIRROR_PORT: '0', CA_DIR: path.join(dir, 'certs'), CACHE_DIR: path.join(dir, 'cache'), CONNECT_TO: '::127.0.0.1:' });
    const { log, lines } = capturingLogger('info');
    await prepareStartup(config, log, []);
    assert.deepEqual(
      lines.map((l) => l.msg),
      ['created a new CA: clients must trust it'],
    );
  });
});

describe('an allowlisted registry that is a refused destination', () => {
  const names: Record<string, string[]> = {
    'loopback.test': ['127.0.0.1'],
    'dual.test': ['203.0.113.7', '::1'],
    'public.test': ['203.0.113.5'],
    'metadata.test': ['169.254.169.254'],
  };
  const asked: string[] = [];
  const resolve = async (host: string): Promise<string[]> => {
    asked.push(host);
    const addresses = names[host];
    if (!addresses) throw Object.assign(new Error(`getaddrinfo ENOTFOUND ${host}`), { code: 'ENOTFOUND' });
    return addresses;
  };
  const warnings = async (env: Env): Promise<Line[]> => {
    const { log, lines } = capturingLogger();
    asked.length = 0;
    await warnAboutRefusedRegistries(loadConfig({ REGISTRIES: '', ...env }), log, resolve);
    return lines.filter((l) => l.msg === REFUSED);
  };
  const registries = (lines: Line[]) => lines.map((l) => [l.registry, l.address, l.reason]);

  it('is found by the addresses its name resolves to, or by the name itself', async () => {
    const found = await warnings({
      ADDITIONAL_REGISTRIES: 'loopback.test:5000 dual.test public.test metadata.test unknown.test localhost:5000 127.0.0.2 *.wild.test',
    });
    assert.deepEqual(
      registries(found).sort(),
      [
        ['dual.test', '::1', 'loopback'],
        ['localhost:5000', undefined, 'loopback'],
        ['loopback.test:5000', '127.0.0.1', 'loopback'],
        ['metadata.test', '169.254.169.254', 'link-local (cloud metadata lives here)'],
        ['127.0.0.2', undefined, 'loopback'],
      ].sort(),
    );
    assert.ok(!asked.includes('localhost') && !asked.includes('127.0.0.2'), 'literals and localhost are judged without a lookup');
  });

  it('is not warned about when ALLOW_DESTINATIONS lets it through or CONNECT_TO routes it', async () => {
    assert.deepEqual(await warnings({ ADDITIONAL_REGISTRIES: 'loopback.test:5000', ALLOW_DESTINATIONS: 'loopback.test:5000' }), []);
    assert.deepEqual(await warnings({ ADDITIONAL_REGISTRIES: 'loopback.test:5000', ALLOW_DESTINATIONS: '127.0.0.1' }), []);
    assert.deepEqual(await warnings({ ADDITIONAL_REGISTRIES: 'loopback.test:5000', CONNECT_TO: 'loopback.test:5000:10.0.0.1:5000' }), []);
    assert.equal((await warnings({ ADDITIONAL_REGISTRIES: 'public.test', DENY_DESTINATIONS: '203.0.113.0/24' })).length, 1, 'DENY_DESTINATIONS refuses it');
  });

  it('is judged by name alone through UPSTREAM_PROXY, which resolves names itself', async () => {
    const found = await warnings({ ADDITIONAL_REGISTRIES: 'loopback.test:5000 localhost:5000', UPSTREAM_PROXY: 'http://proxy.corp:3128' });
    assert.deepEqual(registries(found), [['localhost:5000', undefined, 'loopback']]);
    assert.ok(!asked.includes('loopback.test'));
    const bypassing = await warnings({ ADDITIONAL_REGISTRIES: 'loopback.test:5000', UPSTREAM_PROXY: 'http://proxy.corp:3128', NO_PROXY: 'loopback.test' });
    assert.deepEqual(registries(bypassing), [['loopback.test:5000', '127.0.0.1', 'loopback']], 'NO_PROXY: regcache resolves it');
  });
});
