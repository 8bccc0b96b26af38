// tier: unit
// The status summary in process (fast tier): the counters, the windows and the lists fed by one call per
// request line; the summary built from the counters' JSON agrees with /metrics; windows per minute over a
// day; several processes merged; a refused MISS is DENIED; the page escapes what clients name.
import assert from 'node:assert/strict';
import { IncomingMessage, ServerResponse } from 'node:http';
import { Socket } from 'node:net';
import { describe, it } from 'node:test';
import { pino } from 'pino';
import { publicStatus } from '../src/admin/public-status.js';
import { renderStatusPage } from '../src/admin/status-page.js';
import { AccessLog } from '../src/telemetry/access-log.js';
import { Metrics } from '../src/telemetry/metrics.js';
import { mergeActivity, type CountedRequest } from '../src/telemetry/recent-activity.js';
import { RequestWindows, windowCounts } from '../src/telemetry/request-windows.js';
import { buildStatusReport } from '../src/telemetry/status-report.js';
import { samples } from './support/metric-samples.js';

const MINUTE = 60_000;
const SINGLE = { mode: 'single' as const, workers: [], restarts: 0, replica: null };

const line = (over: Partial<CountedRequest>): CountedRequest => ({
  cache: 'MISS',
  kind: 'blob',
  method: 'GET',
  status: 200,
  bytes: 0,
  path: '/v2/library/app/blobs/sha256:' + 'a'.repeat(64),
  registry: 'docker.io',
  repository: 'library/app',
  tag: null,
  digest: 'sha256:' + 'a'.repeat(64),
  redirect: false,
  error: null,
  reason: null,
  ...over,
});

/** A clock the test moves. */
function clock(start: number) {
  let t = start;
  return { now: () => t, advance: (ms: number) => (t += ms) };
}

describe('status summary', () => {
  it('builds the same figures as the counters /metrics serves, and keeps admin requests apart', async () => {
    const c = clock(Date.UTC(2026, 0, 1, 12));
    const metrics = new Metrics(c.now);
    metrics.expectRegistries(['docker.io', 'ghcr.io']);
    metrics.request(line({ cache: 'MISS', kind: 'manifest-by-tag', tag: 'v1', bytes: 500 }));
    metrics.request(line({ cache: 'MISS', bytes: 10_000 }));
    metrics.request(line({ cache: 'REVALIDATED', kind: 'manifest-by-tag', tag: 'v1', bytes: 500 }));
    metrics.request(line({ cache: 'HIT', bytes: 10_000 }));
    metrics.request(line({ cache: 'HIT', kind: 'manifest-by-digest', method: 'HEAD', bytes: 0 }));
    metrics.request(line({ cache: 'DENIED', kind: 'manifest-by-tag', tag: 'v1', status: 401, bytes: 60, registry: 'ghcr.io', repository: 'org/private' }));
    metrics.request(line({ cache: 'BYPASS', kind: 'ping', bytes: 20, registry: 'other', repository: null, digest: null }));
    metrics.request(line({ cache: 'ADMIN', kind: 'admin', path: '/metrics', bytes: 9000, registry: 'other' }));
    metrics.request(line({ cache: 'REJECTED', kind: 'admin-auth', path: '/status', status: 401, registry: 'other' }));

    const text = await metrics.registry.metrics();
    const report = buildStatusReport(await metrics.registry.getMetricsAsJSON(), metrics.activity.snapshot(), SINGLE, c.now());
    // Content requests: the two MISSes upstream; REVALIDATED and both HITs from the cache (a HEAD too).
    assert.deepEqual(report.hitRatio.sinceStart.requests, { cache: 3, upstream: 2, ratio: 0.6 });
    assert.equal(samples(text, 'regcache_content_requests_total').get('source="cache",registry="docker.io"'), 3);
    assert.equal(samples(text, 'regcache_content_requests_total').get('source="upstream",registry="ghcr.io"'), 0, 'made at 0');
    // Bytes: every body byte not of regcache's own making (the DENIED answer and the ping came from upstream).
    assert.deepEqual(report.hitRatio.sinceStart.bytes, { cache: 10_500, upstream: 10_580, ratio: 10_500 / 21_080 });
    assert.equal(samples(text, 'regcache_bytes_served_total').get('source="upstream",registry="ghcr.io"'), 60);
    assert.deepEqual(report.hitRatio.lastHour, report.hitRatio.sinceStart);
    // A manifest GET answered from the cache saved an upstream GET; a HEAD did not.
    assert.deepEqual(report.upstreamManifestGetsSaved, { 'docker.io': 1, 'ghcr.io': 0, other: 0 });
    assert.deepEqual(report.requests, { MISS: 2, REVALIDATED: 1, HIT: 2, DENIED: 1, BYPASS: 1 });
    assert.ok(!text.includes('kind="admin'), 'admin requests are not registry requests');
    assert.equal(samples(text, 'regcache_admin_requests_total').get('endpoint="/metrics"'), 1);
    assert.equal(samples(text, 'regcache_admin_requests_total').get('endpoint="/status"'), 1);
    assert.deepEqual(report.topImages, [{ image: 'docker.io/library/app:v1', pulls: 2 }]);
    assert.equal(report.recentErrors.length, 1);
    assert.equal(report.recentErrors[0]!.cache, 'DENIED');
    // Series an alert needs exist before their first event.
    assert.equal(samples(text, 'regcache_upstream_errors_total').get('cause="timeout"'), 0);
    assert.equal(samples(text, 'regcache_evictions_total').get('reason="size"'), 0);
    assert.equal(samples(text, 'regcache_corrupt_content_total').get(''), 0);
  });

  it('sums the last hour and the last day from minutes, and forgets what is older than a day', () => {
    const c = clock(Date.UTC(2026, 0, 1, 0));
    const windows = new RequestWindows(c.now);
    windows.request('upstream');
    windows.bytes('upstream', 1000);
    c.advance(30 * MINUTE);
    windows.request('cache');
    windows.bytes('cache', 1000);
    c.advance(45 * MINUTE); // the first minute is now 75 minutes old
    windows.request('cache');
    windows.bytes('cache', 500);
    const minutes = windows.snapshot();
    assert.deepEqual(windowCounts(minutes, 60, c.now()), { cacheRequests: 2, upstreamRequests: 0, cacheBytes: 1500, upstreamBytes: 0 });
    assert.deepEqual(windowCounts(minutes, 24 * 60, c.now()), { cacheRequests: 2, upstreamRequests: 1, cacheBytes: 1500, upstreamBytes: 1000 });
    c.advance(24 * 60 * MINUTE - 40 * MINUTE); // the second minute is past a day
    windows.request('upstream');
    assert.equal(windows.snapshot().length, 2, 'minutes older than a day are dropped');
    assert.deepEqual(windowCounts(windows.snapshot(), 24 * 60, c.now()), { cacheRequests: 1, upstreamRequests: 1, cacheBytes: 500, upstreamBytes: 0 });
  });

  it('merges several processes: minutes and pulls summed, errors by time, the earliest start', () => {
    const c = clock(Date.UTC(2026, 0, 1, 0));
    const a = new Metrics(c.now);
    c.advance(1000);
    const b = new Metrics(c.now);
    a.request(line({ cache: 'HIT', kind: 'manifest-by-tag', tag: 'v1' }));
    b.request(line({ cache: 'HIT', kind: 'manifest-by-tag', tag: 'v1' }));
    b.request(line({ cache: 'CORRUPT', error: 'CorruptContentError: digest mismatch' }));
    c.advance(1000);
    a.request(line({ cache: 'MISS', status: 502, error: 'upstream: connect ECONNREFUSED' }));
    const merged = mergeActivity([a.activity.snapshot(), b.activity.snapshot()]);
    assert.equal(merged.startedAt, new Date(Date.UTC(2026, 0, 1, 0)).toISOString());
    assert.deepEqual(merged.pulls, { 'docker.io/library/app:v1': 2 });
    assert.deepEqual(
      merged.errors.map((e) => e.cache),
      ['CORRUPT', 'MISS'],
    );
    assert.deepEqual(windowCounts(merged.minutes, 60, c.now()), { cacheRequests: 2, upstreamRequests: 1, cacheBytes: 0, upstreamBytes: 0 });
  });

  it('keeps at most 1000 images, forgetting the least pulled', () => {
    const metrics = new Metrics();
    for (let i = 0; i < 1001; i++) metrics.request(line({ cache: 'HIT', kind: 'manifest-by-tag', tag: `v${i}`, ...(i === 0 ? {} : {}) }));
    metrics.request(line({ cache: 'HIT', kind: 'manifest-by-tag', tag: 'v1000' }));
    const pulls = metrics.activity.snapshot().pulls;
    assert.equal(Object.keys(pulls).length, 1000);
    assert.equal(pulls['docker.io/library/app:v1000'], 2);
  });

  it('lists a running fill with its progress until it settles', async () => {
    const { EventEmitter } = await import('node:events');
    const metrics = new Metrics();
    const fill = Object.assign(new EventEmitter(), { digest: 'sha256:' + 'b'.repeat(64), written: 0, expectedSize: 4096 });
    metrics.fillStarted(fill, 'docker.io', 'library/app');
    fill.written = 1024;
    assert.deepEqual(
      metrics.activity.snapshot().fills.map((f) => [f.repository, f.written, f.size]),
      [['library/app', 1024, 4096]],
    );
    fill.emit('settled');
    assert.deepEqual(metrics.activity.snapshot().fills, []);
  });

  it('escapes what clients and upstreams name on the page', async () => {
    const metrics = new Metrics();
    metrics.request(line({ cache: 'HIT', kind: 'manifest-by-tag', tag: 'v1', repository: '<script>alert(1)</script>' }));
    metrics.request(line({ cache: 'MISS', status: 502, error: '<img src=x onerror=alert(2)>' }));
    const html = renderStatusPage(buildStatusReport(await metrics.registry.getMetricsAsJSON(), metrics.activity.snapshot(), SINGLE));
    assert.ok(!html.includes('<script>') && !html.includes('<img'), 'no markup from requests');
    assert.match(html, /&lt;script&gt;alert\(1\)&lt;\/script&gt;/);
    assert.match(html, /&lt;img src=x onerror=alert\(2\)&gt;/);
  });
});

describe('the status summary for an open admin door', () => {
  it('names only images and repositories the cache listing shows to anyone', async () => {
    const metrics = new Metrics();
    metrics.request(line({ cache: 'HIT', kind: 'manifest-by-tag', tag: 'v1', repository: 'library/app' }));
    metrics.request(line({ cache: 'HIT', kind: 'manifest-by-tag', tag: 'v1', repository: 'team/private' }));
    metrics.request(line({ cache: 'DENIED', kind: 'manifest-by-tag', tag: 'v1', status: 401, repository: 'team/private', reason: 'team/private is private' }));
    const report = buildStatusReport(await metrics.registry.getMetricsAsJSON(), metrics.activity.snapshot(), SINGLE);
    const listing = {
      registries: { 'docker.io': { url: 'https://registry-1.docker.io', images: 1, repositories: [{ name: 'library/app', tags: ['v1'] }] } },
      summary: { 'docker.io': 1, total: 1 },
    };
    const shown = publicStatus(report, listing);
    assert.deepEqual(shown.topImages, [{ image: 'docker.io/library/app:v1', pulls: 1 }]);
    assert.deepEqual(
      shown.recentErrors.map((e) => [e.cache, e.repository, e.message]),
      [['DENIED', null, '(private content)']],
    );
    assert.deepEqual(shown.hitRatio, report.hitRatio, 'the figures stay');
    assert.equal(report.topImages.length, 2, 'an admin sees both');
  });
});

describe('request lines: a refused pull is DENIED', () => {
  const answer = (status: number, cache: 'MISS' | 'HIT') => {
    const counted: CountedRequest[] = [];
    const written: Record<string, unknown>[] = [];
    const log = pino({ level: 'info' }, { write: (s: string) => void written.push(JSON.parse(s) as Record<string, unknown>) });
    const counters = { request: (r: CountedRequest) => void counted.push(r), rateLimitRemaining: () => undefined, upstreamError: () => undefined };
    const req = new IncomingMessage(new Socket());
    req.method = 'GET';
    req.url = '/v2/team/app/manifests/v1';
    const res = new ServerResponse(req);
    const record = new AccessLog(log, counters, (origin) => (origin === 'private.test' ? 'private.test' : 'other')).record(req, res, 'private.test');
    record.cache = cache;
    record.kind = 'manifest-by-tag';
    record.repository = 'team/app';
    res.statusCode = status;
    res.emit('close');
    return { line: written[0]!, counted: counted[0]! };
  };

  it('turns a MISS that upstream answered 401 or 403 into DENIED, in the log and the counters', () => {
    for (const status of [401, 403]) {
      const { line: l, counted } = answer(status, 'MISS');
      assert.equal(l.cache, 'DENIED');
      assert.equal(l.repository, 'team/app');
      assert.match(String(l.reason), /upstream refused this client/);
      assert.equal(counted.cache, 'DENIED');
      assert.equal(counted.registry, 'private.test');
    }
  });

  it('leaves other answers as they were', () => {
    assert.equal(answer(404, 'MISS').line.cache, 'MISS');
    assert.equal(answer(200, 'MISS').line.cache, 'MISS');
    assert.equal(answer(401, 'HIT').line.cache, 'HIT');
  });
});
