// tier: unit
// startProxy runs in-process, more than once: each proxy has its own metrics (a prom-client registry of
// its own), so two proxies in one process count apart and neither's start fails on the other's metric
// names.
import assert from 'node:assert/strict';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { loadConfig } from '../src/config/config.js';
import { createLogger } from '../src/telemetry/log.js';
import { startProxy, type RunningProxy } from '../src/assembly/proxy.js';
import { freePort } from './harness/ports.js';
import { TmpDirs } from './harness/tmp.js';

/** A counter's value in a /metrics text, 0 when absent. */
function counter(text: string, series: string): number {
  const line = text.split('\n').find((l) => l.startsWith(series + ' '));
  return line === undefined ? 0 : Number(line.slice(series.length + 1));
}

describe('two proxies in one process', () => {
  const tmp = new TmpDirs();
  const proxies: RunningProxy[] = [];

  before(async () => {
    const root = await tmp.make('regcache-in-process');
    for (const name of ['a', 'b']) {
      const env = { PORT: '0', MIRROR_PORT: String(await freePort()), CA_DIR: path.join(root, name, 'certs'), CACHE_DIR: path.join(root, name, 'cache') };
      proxies.push(await startProxy(loadConfig(env), createLogger('silent', false)));
    }
  });

  after(async () => {
    for (const proxy of proxies) await proxy.close(0);
    await tmp.cleanup();
  });

  it('start side by side and count their own requests', async () => {
    const [a, b] = proxies as [RunningProxy, RunningProxy];
    assert.notEqual(a.port, b.port);
    // Admin requests have their own counter, by endpoint (they are no registry requests).
    const admin = (text: string) =>
      counter(text, 'regcache_admin_requests_total{endpoint="/"}') + counter(text, 'regcache_admin_requests_total{endpoint="/metrics"}');
    const metricsOf = async (proxy: RunningProxy) => (await fetch(`http://127.0.0.1:${proxy.port}/metrics`)).text();
    const before = [admin(await metricsOf(a)), admin(await metricsOf(b))];
    for (let i = 0; i < 3; i++) assert.equal((await fetch(`http://127.0.0.1:${a.port}/`)).status, 200);
    // Each /metrics request is itself counted once its line is written, after the body was read.
    await new Promise((resolve) => setTimeout(resolve, 50));
    const [afterA, afterB] = [admin(await metricsOf(a)), admin(await metricsOf(b))];
    assert.equal(afterA - before[0]!, 4, 'a: three status pages and one /metrics');
    assert.equal(afterB - before[1]!, 1, 'b: its own /metrics only');
  });
});
