// tier: e2e
// WORKERS=2 end to end: a real regcache primary with two worker processes, a real docker-registry behind it
// (skopeo pulls) and a scripted registry that sends its blobs slowly (raw HTTP clients on the mirror port,
// one new connection per request, so that Node's cluster hands them to both workers in turn). One store for
// both: one upstream GET per blob with every client getting the same bytes, another worker's fill streamed
// as it arrives, a HIT in one worker of what the other stored, one view for operators (/healthz,
// /api/v1/cache, /metrics, `regcache cache`), a worker killed with -9 while it leads a fill (replaced, its
// followers cut before the last byte, nothing stored); then eviction within CACHE_MAX_SIZE across workers
// and a SIGTERM that lets a transfer finish.
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import { readdir } from 'node:fs/promises';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { makeImage, pushImage, type Image } from './harness/images.js';
import { createTestCA } from './harness/pki.js';
import { freePort } from './harness/ports.js';
import { run, waitFor } from './harness/proc.js';
import { requestLines, startRegcache, type LogLine, type Regcache } from './harness/regcache.js';
import { TmpDirs } from './harness/tmp.js';
import { FakeRegistry, makeBlob, type FakeBlob } from './support/fake-registry.js';
import { get, request } from './support/plain-http.js';
import { assertConcurrentPullsFetchOnce, certDirFor, startProxyFor, startUpstream, type Upstream } from './support/upstream-fixture.js';

const CLI = path.resolve(import.meta.dirname, '../dist/cli.js');
const sha256 = (data: Buffer): string => 'sha256:' + crypto.createHash('sha256').update(data).digest('hex');

const workerOf = (line: LogLine): number => Number(line.worker);
const blobPath = (repo: string, blob: FakeBlob, ns: string) => `/v2/${repo}/blobs/${blob.digest}?ns=${ns}`;

/** `regcache cache ... --json` against the running server's control socket. */
async function cacheCommand<T>(proxy: Regcache, ...args: string[]): Promise<T> {
  const r = await run(process.execPath, [CLI, 'cache', ...args, '--json', '--cache-dir', proxy.cacheDir], { env: { PATH: process.env.PATH ?? '' } });
  assert.equal(r.code, 0, r.stderr);
  return JSON.parse(r.stdout) as T;
}

/** Worker id -> pid, from the primary's `worker started` lines. */
async function workerPids(proxy: Regcache): Promise<Map<number, number>> {
  return new Map((await proxy.logs()).filter((l) => l.msg === 'worker started').map((l) => [Number(l.workerId), Number(l.pid)]));
}

/** The ids of the workers serving now (two, once a replacement started), from their `worker listening` lines. */
async function waitForServing(proxy: Regcache): Promise<number[]> {
  const exited = new Set((await proxy.logs()).filter((l) => /^worker exited/.test(String(l.msg))).map((l) => Number(l.workerId)));
  let serving: number[] = [];
  await waitFor(
    async () => {
      serving = (await proxy.logs()).filter((l) => l.msg === 'worker listening' && !exited.has(workerOf(l))).map(workerOf);
      return serving.length === 2;
    },
    { timeoutMs: 15_000, what: 'two workers serving' },
  );
  return serving;
}

describe('WORKERS=2: two worker processes on one store', () => {
  const tmp = new TmpDirs();
  const slow = new FakeRegistry(); // slow.test: blobs sent slowly, scripted per test
  let root: string;
  let upstream: Upstream;
  let image: Image;
  let proxy: Regcache;

  before(async () => {
    root = await tmp.make('regcache-workers');
    upstream = await startUpstream(path.join(root, 'upstream'), ['registry.test'], ['workers-small']);
    // Big enough that the concurrent pulls overlap while the fills run.
    image = await makeImage(path.join(root, 'image'), { layers: [4, 3, 2].map((mb, i) => ({ size: mb * 1024 * 1024, seed: `workers-${i}` })), gzipLevel: 0 });
    await pushImage(upstream.registry.url, 'lib/app', 'v1', image, { caFile: upstream.ca.certFile });
    await slow.start(await upstream.ca.issue(['slow.test'], root, 'slow'));
    proxy = await startProxyFor(upstream, {
      dir: path.join(root, 'proxy'),
      env: {
        WORKERS: '2',
        WORKER_STALL_TIMEOUT: '5s',
        ADDITIONAL_REGISTRIES: 'registry.test slow.test',
        MIRROR_PORT: String(await freePort()),
        ADMIN_PORT: String(await freePort()),
      },
      routes: { 'registry.test': upstream.registry.port, 'slow.test': slow.port },
    });
  });

  after(async () => {
    await proxy?.stop();
    await slow.close();
    await upstream?.registry.stop();
    await tmp.cleanup();
  });

  it('starts a primary and two workers, every line naming its process; one listening line', async () => {
    const lines = await proxy.logs();
    assert.ok(
      lines.every((l) => typeof l.worker === 'number'),
      'every line has worker',
    );
    assert.equal(lines.filter((l) => l.msg === 'listening').length, 1);
    assert.equal(lines.find((l) => l.msg === 'listening')?.worker, 0, 'said by the primary');
    assert.deepEqual(new Set(lines.filter((l) => l.msg === 'worker listening').map(workerOf)), new Set([1, 2]));
    assert.equal((await workerPids(proxy)).size, 2);
  });

  it('concurrent cold pulls through both workers: each blob fetched upstream once, every client the same bytes', async () => {
    const certDir = await certDirFor(proxy, path.join(root, 'certs.d'));
    const mark = (await proxy.logs()).length;
    const clients = [proxy, proxy, proxy, proxy];
    const blobs = await assertConcurrentPullsFetchOnce(upstream.registry, image, clients, 'registry.test/lib/app:v1', root, certDir);
    const lines = (await proxy.requests(mark)).filter((l) => l.kind === 'blob' && l.method === 'GET');
    assert.equal(lines.length, clients.length * blobs.length);
    assert.ok(
      lines.every((l) => l.status === 200),
      JSON.stringify(lines.filter((l) => l.status !== 200)),
    );
    assert.deepEqual(new Set(lines.map(workerOf)), new Set([1, 2]), 'both workers served blobs');
    for (const digest of blobs) {
      const cold = lines.filter((l) => l.digest === digest && l.cache === 'MISS' && l.coalesced !== true);
      assert.equal(cold.length, 1, `one request led the fill of ${digest}: ${JSON.stringify(lines.filter((l) => l.digest === digest))}`);
    }
  });

  it("streams another worker's fill as it arrives, before the commit", async () => {
    const blob = slow.add(makeBlob(3 * 1024 * 1024, 'workers-stream'), { kind: 'slow', chunk: 64 * 1024, delayMs: 20 });
    const target = blobPath('lib/stream', blob, 'slow.test');
    const mark = (await proxy.logs()).length;
    let leaderBytes = 0;
    const leader = get(proxy.mirrorPort!, target, (n) => (leaderBytes = n));
    await waitFor(async () => leaderBytes >= 256 * 1024, { timeoutMs: 10_000, what: 'the first client to get bytes' });
    const followers = await Promise.all([1, 2, 3].map(() => get(proxy.mirrorPort!, target)));
    const first = await leader;
    for (const got of [first, ...followers]) {
      assert.equal(got.status, 200);
      assert.ok(got.complete && sha256(got.body) === blob.digest, 'the whole, verified body');
    }
    for (const got of followers) assert.ok(got.firstByteAt! < first.doneAt, 'a follower had bytes before the fill was over');
    assert.equal(slow.count('GET', `/blobs/${blob.digest}`), 1, 'one upstream GET');
    const lines = await requestLines(proxy, (l) => l.digest === blob.digest, 4, { since: mark });
    const led = lines.find((l) => l.cache === 'MISS' && l.coalesced !== true)!;
    assert.ok(
      lines.some((l) => l.coalesced === true && workerOf(l) !== workerOf(led)),
      `a request in the other worker joined: ${JSON.stringify(lines)}`,
    );
  });

  it('answers a HIT in one worker of what the other stored', async () => {
    const blob = slow.add(makeBlob(200_000, 'workers-hit'));
    const target = blobPath('lib/hit', blob, 'slow.test');
    const mark = (await proxy.logs()).length;
    const cold = await get(proxy.mirrorPort!, target);
    assert.ok(cold.complete && sha256(cold.body) === blob.digest);
    const committed = await proxy.waitForLog((l) => l.msg === 'fill committed' && l.digest === blob.digest, 'the fill to commit');
    // New connections alternate between the workers: one of the next two lands on the other.
    for (let i = 0; i < 2; i++) assert.ok(sha256((await get(proxy.mirrorPort!, target)).body) === blob.digest);
    const lines = await requestLines(proxy, (l) => l.digest === blob.digest, 3, { since: mark });
    const hits = lines.filter((l) => l.cache === 'HIT' && workerOf(l) !== workerOf(committed));
    assert.ok(hits.length >= 1, `a HIT in the worker that did not fill it: ${JSON.stringify(lines)}`);
    assert.equal(slow.count('GET', `/blobs/${blob.digest}`), 1);
  });

  it('/healthz and /api/v1/cache answer the same from either worker, for the whole tree', async () => {
    for (const target of ['/healthz', '/api/v1/cache']) {
      const mark = (await proxy.logs()).length;
      const bodies = [];
      for (let i = 0; i < 4; i++) bodies.push(JSON.parse((await get(proxy.port, target)).body.toString()) as unknown);
      for (const body of bodies.slice(1)) assert.deepEqual(body, bodies[0], target);
      const served = await requestLines(proxy, (l) => l.path === target, 4, { since: mark });
      assert.deepEqual(new Set(served.map(workerOf)), new Set([1, 2]), `${target} answered by both workers`);
    }
    const health = JSON.parse((await get(proxy.port, '/healthz')).body.toString()) as {
      ok: boolean;
      checks: Record<string, boolean>;
      workers: { expected: number; running: number };
    };
    assert.equal(health.ok, true);
    assert.equal(health.checks.workers, true);
    assert.deepEqual(health.workers, { expected: 2, running: 2 });
    const listing = JSON.parse((await get(proxy.port, '/api/v1/cache')).body.toString()) as {
      registries: Record<string, { repositories: { name: string; tags: string[] }[] }>;
    };
    assert.deepEqual(listing.registries['registry.test']?.repositories, [{ name: 'lib/app', tags: ['v1'] }]);
  });

  it('/metrics adds up every worker; the store is counted once', async () => {
    const before = await proxy.requests();
    assert.deepEqual(new Set(before.map(workerOf)), new Set([1, 2]));
    const adminPort = Number((await proxy.logs()).find((l) => l.msg === 'listening')?.adminPort);
    const text = (await get(adminPort, '/metrics')).body.toString(); // ADMIN_PORT: the third port the workers share
    const values = (name: string) => [...text.matchAll(new RegExp(`^${name}(?:\\{[^}]*\\})? (\\S+)$`, 'gm'))].map((m) => Number(m[1]));
    const sum = (name: string) => values(name).reduce((a, b) => a + b, 0);
    const registryLines = before.filter((l) => l.kind !== 'admin' && l.kind !== 'admin-auth'); // admin requests count apart
    assert.equal(sum('regcache_requests_total'), registryLines.length, 'every request line of both workers, counted once');
    const du = await cacheCommand<{ entries: number; totalBytes: number }>(proxy, 'du');
    assert.deepEqual(values('regcache_store_entries'), [du.entries], 'the store, once');
    assert.deepEqual(values('regcache_store_bytes'), [du.totalBytes]);
    assert.deepEqual(values('regcache_connections_waiting'), [0], "the primary's: none waits for a worker when both serve");
    assert.equal(sum('regcache_upstream_fetches_total'), new Set((await proxy.logs()).filter((l) => l.msg === 'fill committed').map((l) => l.digest)).size);
  });

  it('regcache cache ls and du work against the running tree', async () => {
    const rows = await cacheCommand<{ digest: string; repositories: string[] }[]>(proxy, 'ls');
    for (const layer of image.layers)
      assert.ok(
        rows.some((r) => r.digest === layer.digest && r.repositories.includes('registry.test/lib/app')),
        layer.digest,
      );
    const du = await cacheCommand<{ entries: number; registries: Record<string, { entries: number }> }>(proxy, 'du');
    assert.equal(du.entries, rows.length);
    assert.ok((du.registries['registry.test']?.entries ?? 0) >= image.layers.length + 1);
  });

  it('kill -9 of the worker leading a fill: it is replaced, its followers are cut before the last byte, nothing is stored', async () => {
    const blob = slow.add(makeBlob(4 * 1024 * 1024, 'workers-kill'), { kind: 'slow', chunk: 64 * 1024, delayMs: 40 });
    const target = blobPath('lib/kill', blob, 'slow.test');
    const mark = (await proxy.logs()).length;
    const pidsBefore = await workerPids(proxy);
    let leaderBytes = 0;
    const leader = get(proxy.mirrorPort!, target, (n) => (leaderBytes = n));
    await waitFor(async () => leaderBytes >= 128 * 1024, { timeoutMs: 10_000, what: 'the first client to get bytes' });
    // The leading worker's spool file is named after it (fill-w<id>-...).
    const spool = (await readdir(path.join(proxy.cacheDir, 'spool'))).find((n) => n.startsWith('fill-w'));
    const leading = Number(/^fill-w(\d+)-/.exec(spool ?? '')?.[1]);
    assert.ok(pidsBefore.has(leading), `a worker leads the fill (${spool})`);
    const received = [0, 0, 0];
    const followers = [0, 1, 2].map((i) => get(proxy.mirrorPort!, target, (n) => (received[i] = n)));
    await waitFor(async () => received.every((n) => n > 0), { timeoutMs: 10_000, what: 'every follower to get bytes' });
    process.kill(pidsBefore.get(leading)!, 'SIGKILL');

    const clients = await Promise.all([leader, ...followers]);
    for (const got of clients) assert.equal(got.complete, false, 'cut: no client got a complete body');
    const exited = await proxy.waitForLog((l) => l.msg === 'worker exited; starting another' && l.workerId === leading, 'the primary to see the worker die');
    assert.equal(exited.signal, 'SIGKILL');
    const replacement = await proxy.waitForLog((l) => l.msg === 'worker listening' && !pidsBefore.has(workerOf(l)), 'a new worker');
    assert.ok(![...pidsBefore.values()].includes(Number(replacement.pid)), 'a new pid');
    const survivor = [...pidsBefore.keys()].find((id) => id !== leading)!;
    const cut = (await proxy.requests(mark)).filter((l) => l.digest === blob.digest && workerOf(l) === survivor);
    assert.ok(
      cut.length >= 1 && cut.every((l) => l.coalesced === true && /exited/.test(String(l.error))),
      `the other worker's clients were cut, naming why: ${JSON.stringify(cut)}`,
    );

    assert.deepEqual(
      (await readdir(path.join(proxy.cacheDir, 'spool'))).filter((n) => n.startsWith(`fill-w${leading}-`)),
      [],
      "the dead worker's spool file is gone",
    );
    const rows = await cacheCommand<{ digest: string }[]>(proxy, 'ls');
    assert.ok(!rows.some((r) => r.digest === blob.digest), 'nothing stored');
    const verify = await cacheCommand<{ corrupt: string[]; missing: string[] }>(proxy, 'verify');
    assert.deepEqual([verify.corrupt, verify.missing], [[], []]);
    const health = JSON.parse((await get(proxy.port, '/healthz')).body.toString()) as { workers: { running: number } };
    assert.equal(health.workers.running, 2);

    slow.behaviour.set(blob.digest, { kind: 'ok' });
    const again = await get(proxy.mirrorPort!, target);
    assert.ok(again.complete && sha256(again.body) === blob.digest, 'a new request fetches it whole');
    assert.equal(slow.count('GET', `/blobs/${blob.digest}`), 2);
  });

  it('replaces a worker that keeps dying after a growing delay (backoff), logged with the delay', async () => {
    const pids = await workerPids(proxy);
    const [id, pid] = [...pids.entries()].at(-1)!; // the newest worker: the replacement of the one killed above
    process.kill(pid, 'SIGKILL');
    const first = await proxy.waitForLog((l) => l.msg === 'worker exited; starting another' && l.workerId === id, 'the primary to see it die');
    const next = await proxy.waitForLog((l) => l.msg === 'worker listening' && !pids.has(workerOf(l)), 'its replacement');
    process.kill(Number(next.pid), 'SIGKILL');
    const second = await proxy.waitForLog(
      (l) => l.msg === 'worker exited; starting another' && l.workerId === workerOf(next),
      'the primary to see the replacement die',
    );
    assert.equal(
      Number(second.restartInMs),
      2 * Number(first.restartInMs),
      `the second exit in a row waits twice as long (${first.restartInMs} ms, then ${second.restartInMs} ms)`,
    );
    await proxy.waitForLog((l) => l.msg === 'worker listening' && !pids.has(workerOf(l)) && workerOf(l) !== workerOf(next), 'a third worker in that slot');
    await waitFor(async () => (JSON.parse((await get(proxy.port, '/healthz')).body.toString()) as { workers: { running: number } }).workers.running === 2, {
      timeoutMs: 10_000,
      what: 'two workers running again',
    });
  });

  it('a worker that stops answering is killed and replaced; the connection handed to it is closed, never left open', async () => {
    // A stopped worker (SIGSTOP: as stuck as a loop that never yields) cannot say it took a connection; the
    // primary hands it one (the next in turn) and the others to the worker that answers. The watchdog
    // (WORKER_STALL_TIMEOUT, 5 s here: far above a busy worker's event-loop delay) kills it, and its
    // connection must end then: Node's cluster kept it open.
    const pids = await workerPids(proxy);
    const serving = await waitForServing(proxy);
    const stopped = serving[0]!;
    const mark = await proxy.logMark();
    process.kill(pids.get(stopped)!, 'SIGSTOP');
    const abort = new AbortController();
    const held = setTimeout(() => abort.abort(new Error('no answer in 30 s: the connection was left open')), 30_000);
    try {
      const ends: { ok: boolean; error?: string }[] = [];
      const requests = [1, 2, 3].map(() =>
        request(proxy.port, '/readyz', { signal: abort.signal }).then(
          () => ends.push({ ok: true }),
          (err: Error) => ends.push({ ok: false, error: err.message }),
        ),
      );
      await waitFor(async () => ends.length === 2, { timeoutMs: 10_000, what: 'the running worker to answer two' });
      assert.ok(ends.every((e) => e.ok));
      await Promise.all(requests);
      assert.equal(ends.length, 3);
      assert.equal(ends[2]!.ok, false, 'the stopped worker never answered it');
      assert.ok(!abort.signal.aborted, 'closed when its worker was killed, not by the client giving up after 30 s');
      const killed = await proxy.waitForLog((l) => l.msg === 'worker stopped answering: killed, another starts', 'the watchdog to kill it', {
        since: mark,
      });
      assert.equal(killed.workerId, stopped);
      assert.ok(Number(killed.silentMs) >= 5000, `silent ${String(killed.silentMs)} ms`);
      const closed = await proxy.waitForLog((l) => l.msg === 'a connection handed to a worker that exited was closed', 'the primary to say so', {
        since: mark,
      });
      assert.deepEqual([closed.workerId, closed.door], [stopped, 'proxy']);
      const exited = await proxy.waitForLog((l) => l.msg === 'worker exited; starting another' && Number(l.workerId) === stopped, 'its exit', { since: mark });
      assert.equal(exited.signal, 'SIGKILL');
      assert.equal((await waitForServing(proxy)).length, 2, 'another worker took its slot');
    } finally {
      clearTimeout(held);
    }
  });

  it('hands a worker draining on its own SIGTERM no new connection: the other answers them', async () => {
    const pids = await workerPids(proxy);
    const serving = await waitForServing(proxy);
    // Two slow transfers at once, one in each worker, so that the one told to stop drains for a while.
    const blobs = [0, 1].map((i) => slow.add(makeBlob(3 * 1024 * 1024, `workers-drain-${i}`), { kind: 'slow', chunk: 64 * 1024, delayMs: 50 }));
    const received = [0, 0];
    const transfers = blobs.map((blob, i) => get(proxy.mirrorPort!, blobPath('lib/drain-one', blob, 'slow.test'), (n) => (received[i] = n)));
    await waitFor(async () => received.every((n) => n > 0), { timeoutMs: 10_000, what: 'both transfers to start' });
    const stopping = serving[0]!;
    const mark = await proxy.logMark();
    process.kill(pids.get(stopping)!, 'SIGTERM');
    await proxy.waitForLog((l) => l.msg === 'shutting down' && workerOf(l) === stopping, 'the worker to drain', { since: mark });
    for (let i = 0; i < 4; i++) assert.equal((await get(proxy.port, '/healthz')).status, 200);
    const served = (await requestLines(proxy, (l) => l.path === '/healthz', 4, { since: mark })).map(workerOf);
    assert.equal(served.length, 4);
    assert.ok(!served.includes(stopping), `none handed to the draining worker ${stopping}: ${JSON.stringify(served)}`);
    for (const [i, transfer] of transfers.entries()) {
      const got = await transfer;
      assert.ok(got.complete && sha256(got.body) === blobs[i]!.digest, "both transfers finish, the draining worker's too");
    }
  });
});

describe('WORKERS=2 with a small CACHE_MAX_SIZE, then SIGTERM', () => {
  const tmp = new TmpDirs();
  const fake = new FakeRegistry();
  let proxy: Regcache;
  const MAX = 3 * 1024 * 1024;

  before(async () => {
    const root = await tmp.make('regcache-workers-bound');
    const ca = await createTestCA(root, 'workers bound CA');
    await fake.start(await ca.issue(['fake.test'], root, 'fake'));
    proxy = await startRegcache({
      dir: path.join(root, 'proxy'),
      env: {
        WORKERS: '2',
        ADDITIONAL_REGISTRIES: 'fake.test',
        UPSTREAM_CA_FILE: ca.certFile,
        CONNECT_TO: `fake.test:443:127.0.0.1:${fake.port}`,
        MIRROR_PORT: String(await freePort()),
        CACHE_MAX_SIZE: String(MAX),
      },
    });
  });

  after(async () => {
    await proxy?.stop();
    await fake.close();
    await tmp.cleanup();
  });

  it('evicts once, in the primary: the store stays within CACHE_MAX_SIZE whichever worker filled it', async () => {
    const mark = (await proxy.logs()).length;
    for (let i = 0; i < 8; i++) {
      const blob = fake.add(makeBlob(700_000, `bound-${i}`));
      const got = await get(proxy.mirrorPort!, blobPath('lib/bound', blob, 'fake.test'));
      assert.ok(got.complete && sha256(got.body) === blob.digest);
      await proxy.waitForLog((l) => l.msg === 'fill committed' && l.digest === blob.digest, 'the commit');
    }
    await waitFor(async () => (await cacheCommand<{ totalBytes: number }>(proxy, 'du')).totalBytes <= MAX, {
      timeoutMs: 10_000,
      what: 'the store to be within CACHE_MAX_SIZE',
    });
    const lines = (await proxy.logs()).slice(mark);
    assert.deepEqual(new Set(lines.filter((l) => l.msg === 'fill committed').map(workerOf)), new Set([1, 2]), 'both workers filled');
    const evicted = lines.filter((l) => l.msg === 'evicted' && l.reason === 'size' && l.level === 'info'); // a run's summary line
    assert.ok(evicted.length >= 1 && evicted.every((l) => l.worker === 0), 'evicted by the primary only');
    assert.ok(
      evicted.every((l) => Number(l.totalBytes) <= MAX),
      JSON.stringify(evicted),
    );
  });

  it('SIGTERM lets a transfer in progress finish, then every process exits, 0', async () => {
    const blob = fake.add(makeBlob(2 * 1024 * 1024, 'drain'), { kind: 'slow', chunk: 64 * 1024, delayMs: 30 });
    let received = 0;
    const transfer = get(proxy.mirrorPort!, blobPath('lib/drain', blob, 'fake.test'), (n) => (received = n));
    await waitFor(async () => received > 0, { timeoutMs: 10_000, what: 'the transfer to start' });
    proxy.daemon.child.kill('SIGTERM');
    const got = await transfer;
    assert.ok(got.complete && sha256(got.body) === blob.digest, 'the transfer finished');
    assert.equal(await proxy.daemon.exited, 0);
    const lines = await proxy.logs();
    assert.equal(lines.filter((l) => l.msg === 'worker stopped').length, 2);
    assert.ok(!lines.some((l) => l.msg === 'worker exited; starting another'), 'no worker was replaced while stopping');
  });
});
