// tier: e2e
// The status figures, end to end: a known sequence of pulls through a real regcache (two workers) — a
// MISS, a HIT, a refused private pull, an eviction — and then the same numbers on the status page in a
// real browser (headless Chromium), in `regcache status --json`, in /metrics, and in a real Prometheus
// scraping it, where every query of the shipped Grafana dashboard returns data and the dashboard's hit
// ratio is the page's. Screenshots of the page stay in .test-artifacts/ (not committed).
import assert from 'node:assert/strict';
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import bcrypt from 'bcryptjs';
import { chromium, type Browser } from 'playwright-core';
import { makeImage, pushImage, type Image } from './harness/images.js';
import { freePort } from './harness/ports.js';
import { run, spawnDaemon, waitFor, type Daemon } from './harness/proc.js';
import type { Regcache } from './harness/regcache.js';
import { TmpDirs } from './harness/tmp.js';
import { basic } from './support/credentials.js';
import { samples } from './support/metric-samples.js';
import { certDirFor, pullThrough, pushTo, startProxyFor, startUpstream, type Upstream } from './support/upstream-fixture.js';
import type { StatusReport } from '../src/telemetry/status-report.js';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const CLI = path.join(ROOT, 'dist', 'cli.js');
const ARTIFACTS = path.join(ROOT, '.test-artifacts');
const ADMIN = { username: 'admin', password: 'status-pw' };
const RATE_LIMIT_REMAINING = 87;

describe('status figures: the page, regcache status, /metrics and Prometheus after a known pull sequence', () => {
  const tmp = new TmpDirs();
  let root: string;
  let hub: Upstream; // stands in for Docker Hub (registry-1.docker.io), reporting its pull allowance
  let other: Image; // a second image there, whose pull evicts the first
  let secret: Upstream; // private.test: every pull needs credentials
  let proxy: Regcache;
  let certDir: string;
  let prometheus: { port: number; daemon: Daemon } | undefined;
  let browser: Browser | undefined;
  let metricsText: string;
  let report: StatusReport;

  const admin = { authorization: basic(ADMIN.username, ADMIN.password) };
  const get = async (p: string, headers: Record<string, string> = admin) => {
    const res = await fetch(`${proxy.proxyUrl}${p}`, { headers });
    return { status: res.status, headers: res.headers, text: await res.text() };
  };
  const pull = (ref: string, out: string) => pullThrough(proxy, ref, path.join(root, out), certDir, path.join(root, `skopeo-${out}`));
  const promQuery = async (query: string): Promise<{ metric: Record<string, string>; value: [number, string] }[]> => {
    const res = await fetch(`http://127.0.0.1:${prometheus!.port}/api/v1/query?query=${encodeURIComponent(query)}`);
    const body = (await res.json()) as { status: string; error?: string; data: { result: { metric: Record<string, string>; value: [number, string] }[] } };
    assert.equal(body.status, 'success', `${query}: ${body.error}`);
    return body.data.result;
  };
  const promNumber = async (query: string): Promise<number | null> => {
    const result = await promQuery(query);
    return result.length === 0 ? null : Number(result[0]!.value[1]);
  };

  /** What the page and `regcache status --json` both show, compared whole. */
  const figures = (r: StatusReport) => ({ hitRatio: r.hitRatio, requests: r.requests, saved: r.upstreamManifestGetsSaved, store: r.store, top: r.topImages });

  before(async () => {
    root = await tmp.make('regcache-status-figures');
    hub = await startUpstream(path.join(root, 'hub'), ['registry-1.docker.io'], ['status-a', 'status-b'], {
      headers: { 'RateLimit-Remaining': `${RATE_LIMIT_REMAINING};w=21600` },
    });
    await pushTo(hub, 'library/app', 'v1');
    other = await makeImage(path.join(root, 'other-image'), {
      layers: [
        { size: 500_000, seed: 'status-c' },
        { size: 650_000, seed: 'status-d' },
      ],
    });
    await pushImage(hub.registry.url, 'library/other', 'v1', other, { caFile: hub.ca.certFile });

    const htpasswd = path.join(root, 'htpasswd');
    await writeFile(htpasswd, `owner:${bcrypt.hashSync('owner-pw', 4)}\n`);
    secret = await startUpstream(path.join(root, 'secret'), ['private.test'], ['status-e'], { htpasswd });
    await pushImage(secret.registry.url, 'team/app', 'v1', secret.image, { caFile: secret.ca.certFile, basic: 'owner:owner-pw' });
    const bundle = path.join(root, 'upstream-cas.pem');
    await writeFile(bundle, hub.ca.certPem + secret.ca.certPem);

    proxy = await startProxyFor(hub, {
      dir: path.join(root, 'proxy'),
      env: {
        WORKERS: '2',
        LOG_LEVEL: 'info',
        ADDITIONAL_REGISTRIES: 'private.test',
        ADMIN_AUTH: `${ADMIN.username}:${ADMIN.password}`,
        UPSTREAM_CA_FILE: bundle,
        // The first image and the second do not fit together: pulling the second evicts.
        CACHE_MAX_SIZE: '1600k',
      },
      routes: { 'registry-1.docker.io': hub.registry.port, 'private.test': secret.registry.port },
    });
    certDir = await certDirFor(proxy, path.join(root, 'certs.d'));

    // Prometheus scrapes from the start, with the shipped alert rules loaded (they must load).
    const promPort = await freePort();
    const config = path.join(root, 'prometheus.yml');
    await writeFile(
      config,
      [
        'global: { scrape_interval: 1s, evaluation_interval: 1s }',
        `rule_files: [${JSON.stringify(path.join(ROOT, 'deploy/prometheus/regcache-alerts.yaml'))}]`,
        'scrape_configs:',
        '  - job_name: regcache',
        `    basic_auth: { username: ${ADMIN.username}, password: ${ADMIN.password} }`,
        `    static_configs: [{ targets: ["127.0.0.1:${proxy.port}"] }]`,
      ].join('\n') + '\n',
    );
    const daemon = spawnDaemon(
      'prometheus',
      [`--config.file=${config}`, `--storage.tsdb.path=${path.join(root, 'tsdb')}`, `--web.listen-address=127.0.0.1:${promPort}`, '--log.level=warn'],
      { env: { PATH: process.env.PATH ?? '/usr/bin:/bin' }, stdoutFile: path.join(root, 'prometheus.log') },
    );
    prometheus = { port: promPort, daemon };
    await waitFor(async () => (await fetch(`http://127.0.0.1:${promPort}/-/ready`).catch(() => null))?.ok === true, {
      timeoutMs: 30_000,
      what: 'Prometheus to be ready',
    });
    await waitFor(async () => (await promNumber('up{job="regcache"}')) === 1, { timeoutMs: 30_000, what: 'Prometheus to scrape regcache' });

    // The known sequence.
    const first = await pull('docker.io/library/app:v1', 'first');
    assert.equal(first.code, 0, first.stderr);
    const second = await pull('docker.io/library/app:v1', 'second');
    assert.equal(second.code, 0, second.stderr);
    const refused = await pull('private.test/team/app:v1', 'refused');
    assert.notEqual(refused.code, 0, 'a pull of a private image without credentials fails');
    const third = await pull('docker.io/library/other:v1', 'third');
    assert.equal(third.code, 0, third.stderr);
    await waitFor(async () => (samples((await get('/metrics')).text, 'regcache_evictions_total').get('reason="size"') ?? 0) > 0, {
      timeoutMs: 15_000,
      what: 'the eviction after the second image',
    });
    // A request is counted when its response closes, which can come after the client has its last byte, and
    // an eviction removes entries one at a time: read once the figures stop moving (two reads alike).
    let previous = '';
    await waitFor(
      async () => {
        const now = JSON.stringify(figures(JSON.parse((await get('/api/v1/status')).text) as StatusReport));
        const settled = now === previous;
        previous = now;
        return settled;
      },
      { timeoutMs: 15_000, intervalMs: 250, what: 'the status figures to settle' },
    );
    metricsText = (await get('/metrics')).text;
    report = JSON.parse((await get('/api/v1/status')).text) as StatusReport;
  });

  after(async () => {
    await browser?.close();
    await prometheus?.daemon.stop();
    await proxy?.stop();
    await hub?.registry.stop();
    await secret?.registry.stop();
    await tmp.cleanup();
  });

  const sum = (name: string, where: (labels: string) => boolean = () => true) =>
    [...samples(metricsText, name)].filter(([labels]) => where(labels)).reduce((n, [, v]) => n + v, 0);

  it('counts the sequence in /metrics: MISS, HIT, DENIED (never MISS), an eviction; admin requests apart', () => {
    const requests = samples(metricsText, 'regcache_requests_total');
    const count = (cache: string, kind: string) => requests.get(`cache="${cache}",kind="${kind}",registry="docker.io"`) ?? 0;
    const appBlobs = hub.blobs.length;
    const otherBlobs = 1 + other.layers.length;
    assert.equal(count('MISS', 'blob'), appBlobs + otherBlobs, 'every blob of both images fetched once');
    assert.equal(count('HIT', 'blob'), appBlobs, 'the second pull of the first image from the cache');
    assert.equal(count('REVALIDATED', 'manifest-by-tag'), 1, 'its tag revalidated with a HEAD');
    assert.equal(
      sum('regcache_content_requests_total', (l) => l.includes('source="cache"')),
      appBlobs + 1,
    );
    assert.equal(
      sum('regcache_content_requests_total', (l) => l.includes('source="upstream"')),
      appBlobs + otherBlobs + 2,
    );
    assert.equal(samples(metricsText, 'regcache_upstream_manifest_gets_saved_total').get('registry="docker.io"'), 1);
    const denied = [...requests].filter(([l]) => l.startsWith('cache="DENIED"'));
    assert.ok(denied.length > 0 && denied.every(([l]) => l.includes('registry="private.test"')), JSON.stringify(denied));
    assert.ok(![...requests].some(([l]) => l.startsWith('cache="MISS"') && l.includes('private.test')), 'the refused pull is no MISS');
    assert.ok(![...requests].some(([l]) => l.includes('kind="admin"')), 'admin requests are not registry requests');
    assert.ok((samples(metricsText, 'regcache_admin_requests_total').get('endpoint="/metrics"') ?? 0) > 0);
    assert.ok(sum('regcache_evictions_total') > 0);
    assert.equal(samples(metricsText, 'regcache_docker_hub_ratelimit_remaining').get(''), RATE_LIMIT_REMAINING);
    assert.equal(samples(metricsText, 'regcache_store_max_bytes').get(''), 1600 * 1024);
    assert.equal(samples(metricsText, 'regcache_workers_running').get(''), 2);
    // Labels stay bounded: registries of the allowlist, and "other".
    const registries = new Set([...metricsText.matchAll(/registry="([^"]*)"/g)].map((m) => m[1]));
    for (const r of registries)
      assert.ok(['docker.io', 'auth.docker.io', 'registry.k8s.io', 'gcr.io', 'quay.io', 'ghcr.io', 'private.test', 'other'].includes(r!), r);
  });

  it('logs the refused pull as DENIED, never MISS', async () => {
    const lines = (await proxy.requests()).filter((l) => l.host === 'private.test' && l.kind === 'manifest-by-tag');
    assert.ok(lines.length > 0 && lines.every((l) => l.cache === 'DENIED' && l.status === 401), JSON.stringify(lines));
  });

  it('gives the same figures in /api/v1/status (the page) and `regcache status --json`', async () => {
    const hit = report.hitRatio.sinceStart;
    assert.equal(
      hit.requests.cache,
      sum('regcache_content_requests_total', (l) => l.includes('source="cache"')),
    );
    assert.equal(
      hit.requests.upstream,
      sum('regcache_content_requests_total', (l) => l.includes('source="upstream"')),
    );
    assert.equal(
      hit.bytes.cache,
      sum('regcache_bytes_served_total', (l) => l.includes('source="cache"')),
    );
    assert.equal(
      hit.bytes.upstream,
      sum('regcache_bytes_served_total', (l) => l.includes('source="upstream"')),
    );
    // Younger than an hour: the windows hold every request since start.
    assert.deepEqual(report.hitRatio.lastHour, hit);
    assert.deepEqual(report.hitRatio.lastDay, hit);
    assert.equal(
      report.requests.DENIED,
      sum('regcache_requests_total', (l) => l.startsWith('cache="DENIED"')),
    );
    assert.equal(report.upstreamManifestGetsSaved['docker.io'], 1);
    assert.equal(report.dockerHubRemaining, RATE_LIMIT_REMAINING);
    assert.equal(report.store.evictions.size, samples(metricsText, 'regcache_evictions_total').get('reason="size"'));
    assert.equal(report.store.maxBytes, 1600 * 1024);
    assert.deepEqual(report.topImages[0], { image: 'docker.io/library/app:v1', pulls: 2 });
    assert.ok(report.recentErrors.some((e) => e.cache === 'DENIED' && e.registry === 'private.test' && e.repository === 'team/app'));
    assert.deepEqual(
      report.processes.workers.map((w) => w.state),
      ['serving', 'serving'],
    );

    const cli = await run(process.execPath, [CLI, 'status', '--json', '--cache-dir', proxy.cacheDir], { env: { PATH: process.env.PATH ?? '' } });
    assert.equal(cli.code, 0, cli.stderr);
    const fromCli = JSON.parse(cli.stdout) as StatusReport;
    assert.deepEqual(figures(fromCli), figures(report));

    const text = await run(process.execPath, [CLI, 'status', '--cache-dir', proxy.cacheDir], { env: { PATH: process.env.PATH ?? '' } });
    assert.equal(text.code, 0, text.stderr);
    const pct = ((hit.requests.cache / (hit.requests.cache + hit.requests.upstream)) * 100).toFixed(1);
    assert.match(
      text.stdout,
      new RegExp(`hit ratio, since start +requests ${pct}% \\(${hit.requests.cache} of ${hit.requests.cache + hit.requests.upstream}\\)`),
    );
    assert.match(text.stdout, /docker\.io\/library\/app:v1/);
  });

  it('shows the same figures on the status page in a real browser, on a desktop and on a phone', async () => {
    assert.equal((await get('/status', {})).status, 401, 'the page needs admin credentials');
    assert.match((await get('/', {})).text, /Status page: GET \/status/);
    browser = await chromium.launch({
      executablePath: '/usr/bin/chromium',
      args: ['--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-dev-shm-usage'],
    });
    const context = await browser.newContext({ httpCredentials: ADMIN, viewport: { width: 1280, height: 1000 } });
    const page = await context.newPage();
    const loaded: string[] = [];
    page.on('request', (r) => loaded.push(r.url()));
    const response = await page.goto(`${proxy.proxyUrl}/status`);
    assert.equal(response?.status(), 200);
    assert.deepEqual(loaded, [`${proxy.proxyUrl}/status`], 'no other asset is loaded');
    assert.equal(await page.locator('meta[http-equiv="refresh"]').getAttribute('content'), '10');

    const figure = (name: string) => page.locator(`[data-figure="${name}"]`).innerText();
    const value = async (name: string) => Number(await page.locator(`[data-figure="${name}"]`).getAttribute('data-value'));
    const hit = report.hitRatio.sinceStart.requests;
    const pct = `${((hit.cache / (hit.cache + hit.upstream)) * 100).toFixed(1)}%`;
    for (const window of ['hour', 'day', 'start']) {
      assert.equal(await figure(`ratio-requests-${window}`), pct, window);
      assert.equal(await figure(`counts-requests-${window}`), `${hit.cache} of ${hit.cache + hit.upstream}`, window);
    }
    assert.equal(
      await value('bytes-cache'),
      sum('regcache_bytes_served_total', (l) => l.includes('source="cache"')),
    );
    assert.equal(
      await value('bytes-upstream'),
      sum('regcache_bytes_served_total', (l) => l.includes('source="upstream"')),
    );
    assert.equal(
      Number(await figure('requests:DENIED')),
      sum('regcache_requests_total', (l) => l.startsWith('cache="DENIED"')),
    );
    assert.equal(
      Number(await figure('requests:HIT')),
      sum('regcache_requests_total', (l) => l.startsWith('cache="HIT"')),
    );
    assert.equal(await figure('manifest-gets-saved:docker.io'), '1');
    assert.equal(await figure('docker-hub-remaining'), String(RATE_LIMIT_REMAINING));
    assert.equal(await value('evictions'), sum('regcache_evictions_total'));
    assert.equal(await value('store-bytes'), samples(metricsText, 'regcache_store_bytes').get(''));
    assert.equal(await figure('pulls:docker.io/library/app:v1'), '2');
    assert.ok((await value('recent-errors')) >= 1);
    assert.equal(await figure('worker-1'), 'serving');
    assert.equal(await figure('worker-2'), 'serving');

    await mkdir(ARTIFACTS, { recursive: true });
    await page.screenshot({ path: path.join(ARTIFACTS, 'status-page.png'), fullPage: true });
    await page.setViewportSize({ width: 390, height: 844 });
    await page.reload();
    const overflow = await page.evaluate(() => document.documentElement.scrollWidth - document.documentElement.clientWidth);
    assert.ok(overflow <= 0, `no sideways scrolling on a phone (${overflow} px too wide)`);
    assert.equal(await figure('ratio-requests-start'), pct);
    await page.screenshot({ path: path.join(ARTIFACTS, 'status-page-phone.png'), fullPage: true });
  });

  it("answers every query of the Grafana dashboard from a real Prometheus, with the page's figures", async () => {
    // The last scrape has the final counts (/metrics itself is not counted in them).
    const cache = report.hitRatio.sinceStart.requests.cache;
    await waitFor(async () => (await promNumber('sum(regcache_content_requests_total{source="cache"})')) === cache, {
      timeoutMs: 30_000,
      what: 'Prometheus to scrape the final counts',
    });
    assert.equal(await promNumber('sum(regcache_content_requests_total{source="upstream"})'), report.hitRatio.sinceStart.requests.upstream);
    assert.equal(await promNumber('sum(regcache_bytes_served_total{source="cache"})'), report.hitRatio.sinceStart.bytes.cache);
    assert.equal(await promNumber('sum(regcache_requests_total{cache="DENIED"})'), report.requests.DENIED);
    assert.equal(await promNumber('sum(regcache_evictions_total)'), sum('regcache_evictions_total'));

    const dashboard = JSON.parse(await readFile(path.join(ROOT, 'deploy/grafana/regcache-dashboard.json'), 'utf8')) as {
      panels: { title: string; type: string; targets?: { expr: string }[] }[];
      templating: { list: { name: string }[] };
    };
    assert.deepEqual(
      dashboard.templating.list.map((v) => v.name),
      ['datasource', 'job', 'instance'],
    );
    const queries = dashboard.panels.flatMap((p) => (p.targets ?? []).map((t) => ({ panel: p.title, expr: t.expr })));
    assert.ok(queries.length >= 20, `${queries.length} queries`);
    const resolve = (expr: string) =>
      expr.replaceAll('$job', 'regcache').replaceAll('$instance', '.*').replaceAll('$__rate_interval', '5m').replaceAll('$__range', '1h');
    for (const { panel, expr } of queries) {
      const result = await promQuery(resolve(expr));
      assert.ok(result.length > 0, `${panel}: ${expr} returned no data`);
      assert.ok(
        result.some((r) => Number.isFinite(Number(r.value[1]))),
        `${panel}: ${expr} returned ${JSON.stringify(result)}`,
      );
    }
    // The dashboard's hit ratio panel reads as the page does (both series have every sample: the ratio is exact).
    const ratio = queries.find((q) => q.panel === 'Hit ratio (requests)')!;
    const shown = ((await promNumber(resolve(ratio.expr)))! * 100).toFixed(1);
    assert.equal(shown, ((cache / (cache + report.hitRatio.sinceStart.requests.upstream)) * 100).toFixed(1));
    const saved = queries.find((q) => q.panel === 'Manifest GETs saved')!;
    assert.equal(Math.round((await promNumber(resolve(saved.expr)))!), 1);
  });
});

describe('regcache status without a server', () => {
  const tmp = new TmpDirs();
  after(() => tmp.cleanup());

  it('says none runs and exits 1', async () => {
    const dir = await tmp.make('regcache-status-none');
    const r = await run(process.execPath, [CLI, 'status', '--cache-dir', dir], { env: { PATH: process.env.PATH ?? '' }, cwd: dir });
    assert.equal(r.code, 1);
    assert.equal(r.stdout, '');
    assert.match(r.stderr, /^regcache: no regcache server is running for CACHE_DIR=.*regcache serve/);
  });
});
