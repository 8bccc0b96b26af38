// tier: e2e
// LOG_FORMAT with real processes: JSON lines only (even the AWS SDK's plain-text warning goes through the
// logger), a two-line startup summary, worker warm-up probes at debug; on a terminal (a pseudo-terminal
// from util-linux's `script`) readable coloured lines by default, and JSON when LOG_FORMAT=json says so.
import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { after, describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import { freePort } from './harness/ports.js';
import { run, spawnDaemon, waitFor } from './harness/proc.js';
import { startRegcache } from './harness/regcache.js';
import { TmpDirs } from './harness/tmp.js';

const CLI = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../dist/cli.js');
const ESC = '\u001b[';

const jsonLines = (text: string) =>
  text
    .split('\n')
    .filter((l) => l !== '')
    .map((l) => {
      try {
        return JSON.parse(l) as Record<string, unknown>;
      } catch {
        assert.fail(`not a JSON line: ${JSON.stringify(l)}`);
      }
    });

describe('log formats', () => {
  const tmp = new TmpDirs();
  after(() => tmp.cleanup());

  it('JSON: a startup summary in two lines, warm-up probes and worker starts below info', async () => {
    const dir = await tmp.make('regcache-log-json');
    const proxy = await startRegcache({ dir, env: { WORKERS: '2', LOG_FORMAT: 'json', LOG_LEVEL: 'debug', MIRROR_PORT: String(await freePort()) } });
    try {
      await proxy.waitForLog((l) => l.msg.startsWith('clients: trust the CA'), 'the startup summary');
      const lines = jsonLines(await readFile(proxy.logFile, 'utf8'));
      const info = lines.filter((l) => l.level === 'info' || l.level === 'warn');
      const ready = info.find((l) => String(l.msg).startsWith('regcache '));
      assert.match(
        String(ready?.msg),
        new RegExp(
          `ready \\(2 workers\\): proxy http://\\S+:${proxy.port}, registry mirror http://\\S+:${proxy.mirrorPort}, status page http://\\S+:${proxy.port}/status`,
        ),
      );
      const clients = info.find((l) => String(l.msg).startsWith('clients:'));
      assert.ok(String(clients?.msg).includes(proxy.caFile), 'names the CA file');
      assert.match(String(clients?.msg), /HTTPS_PROXY=http:\/\/\S+:\d+; or, with no CA, use the mirror/);
      // Each worker's warm-up request is a probe: logged, at debug only; so is each worker's own 'listening'.
      const probes = lines.filter((l) => l.msg === 'request' && l.path === '/readyz');
      assert.equal(probes.length, 2, JSON.stringify(probes));
      assert.ok(probes.every((l) => l.level === 'debug'));
      assert.ok(!info.some((l) => l.msg === 'request'), 'no request line at info before any client');
      assert.ok(!info.some((l) => l.msg === 'worker listening'));
    } finally {
      await proxy.stop();
    }
  });

  it('JSON: nothing but JSON lines, the AWS SDK warning included', async () => {
    const dir = await tmp.make('regcache-log-aws');
    const env = {
      PATH: process.env.PATH ?? '',
      PORT: '0',
      MIRROR_PORT: '0',
      CA_DIR: path.join(dir, 'ca'),
      CACHE_DIR: path.join(dir, 'cache'),
      LOG_FORMAT: 'json',
      // A bucket no one answers for: the SDK is loaded (and warns), then startup fails naming CACHE_STORE.
      CACHE_STORE: 's3://status-bucket',
      S3_ENDPOINT: `http://127.0.0.1:${await freePort()}`,
      AWS_ACCESS_KEY_ID: 'test',
      AWS_SECRET_ACCESS_KEY: 'test-secret',
    };
    const r = await run(process.execPath, [CLI, 'serve'], { env, cwd: dir, timeoutMs: 60_000 });
    assert.equal(r.code, 1);
    const lines = jsonLines(r.stdout + r.stderr);
    assert.ok(lines.some((l) => l.level === 'fatal' && l.variable === 'CACHE_STORE'));
    const major = Number(process.versions.node.split('.')[0]);
    // The SDK warns on Node below 22 only; above, there is no warning to route and the check above stands alone.
    if (major < 22) {
      const warning = lines.find((l) => l.msg === 'process warning');
      assert.ok(warning, 'the SDK warning is a log line');
      assert.equal(warning.level, 'warn');
      assert.match(String(warning.detail), /AWS SDK for JavaScript/);
    }
  });

  it('on a terminal: readable coloured lines by default, a request line led by its status; JSON when LOG_FORMAT=json', async () => {
    const start = async (name: string, extra: Record<string, string>) => {
      const dir = await tmp.make(`regcache-log-${name}`);
      const mirrorPort = await freePort();
      const env = {
        PATH: process.env.PATH ?? '',
        PORT: '0',
        MIRROR_PORT: String(mirrorPort),
        WORKERS: '1',
        CA_DIR: path.join(dir, 'ca'),
        CACHE_DIR: path.join(dir, 'cache'),
        ...extra,
      };
      const out = path.join(dir, 'terminal.log');
      const daemon = spawnDaemon('script', ['-qefc', `exec ${JSON.stringify(process.execPath)} ${JSON.stringify(CLI)} serve`, '/dev/null'], {
        env,
        stdoutFile: out,
        cwd: dir,
      });
      const text = async () => (await readFile(out, 'utf8').catch(() => '')).replaceAll('\r', '');
      await waitFor(async () => (await text()).includes('clients: trust the CA'), { timeoutMs: 20_000, what: `${name}: the startup summary` });
      // The mirror's ping is answered by regcache itself: a request line with no upstream needed.
      await (await fetch(`http://127.0.0.1:${mirrorPort}/v2/`)).text();
      await waitFor(async () => /"msg":"request"|LOCAL/.test(await text()), { timeoutMs: 10_000, what: `${name}: the request line` });
      const logged = await text(); // before the stop: `script` then adds a line of its own
      await daemon.stop();
      return logged;
    };

    const pretty = await start('tty', {});
    const lines = pretty.split('\n').filter((l) => l !== '');
    assert.ok(!lines.some((l) => l.trimStart().startsWith('{')), 'no JSON on a terminal');
    assert.ok(lines.some((l) => l.startsWith(`${ESC}36mINFO`) && l.includes('ready: proxy http://')));
    const request = lines.find((l) => l.includes('LOCAL'));
    assert.ok(request?.startsWith(`${ESC}2mLOCAL`), `the request line starts with its status: ${JSON.stringify(request)}`);
    assert.match(request!.replace(/\u001b\[[0-9;]*m/g, ''), /^LOCAL +docker\.io +\/v2\/ +ping /);

    const json = await start('tty-json', { LOG_FORMAT: 'json' });
    assert.ok(jsonLines(json).some((l) => l.msg === 'request' && l.cache === 'LOCAL'));
  });
});
