// tier: e2e
// The Docker image as an operator runs it. Docker Hub is out of reach, so its FROM image is a stand-in
// built from Debian's packages and the npm registry (test/image/build-base-image.sh); then the real
// Dockerfile is built (BuildKit, as Docker 23+ does by default) and run on a private dockerd with
// --network host and named volumes, a real docker-registry playing Docker Hub (CONNECT_TO), skopeo
// pulling through it. The stand-in's file system is built while the daemon starts; the daemon uses
// overlay2 where the kernel has it (vfs copies the whole image for every container). The timings are
// printed as diagnostics.
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { existsSync } from 'node:fs';
import { copyFile, mkdir, readdir, readFile, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { promisify } from 'node:util';
import { after, before, describe, it } from 'node:test';
import { BASE_PATH } from './harness/containerd.js';
import { startDockerd, type Dockerd } from './harness/dockerd.js';
import { freePort } from './harness/ports.js';
import { run, waitFor } from './harness/proc.js';
import { parseLogLines, type LogLine } from './harness/regcache.js';
import { assertSkopeoDir, skopeoCopyToDir } from './harness/skopeo.js';
import { TmpDirs } from './harness/tmp.js';
import { pushTo, startUpstream, type Upstream } from './support/upstream-fixture.js';

const ROOT = path.resolve(import.meta.dirname, '..');
const BASE_IMAGE_SCRIPT = path.join(ROOT, 'test/image/build-base-image.sh');
const IMAGE = 'regcache:test';
// More CAs for npm inside the build: the host's bundle, which on this network includes the CA that
// re-signs outbound TLS (and elsewhere is only the public roots, which changes nothing).
const HOST_CA_BUNDLE = '/etc/ssl/certs/ca-certificates.crt';
const STOP_TIMEOUT_S = 15; // docker-compose.yaml's stop_grace_period
const VOLUMES = ['-v', 'regcache-ca:/ca', '-v', 'regcache-cache:/docker_mirror_cache'];

const blobGets = (lines: LogLine[]): LogLine[] => lines.filter((l) => l.msg === 'request' && l.kind === 'blob' && l.method === 'GET');
const seconds = (since: number): number => Math.round((Date.now() - since) / 100) / 10;

describe('the Docker image', () => {
  const tmp = new TmpDirs();
  let root: string;
  let upstream: Upstream;
  let dockerd: Dockerd;
  let proxyPort: number;
  const timings: string[] = [];

  const docker = async (args: string[], timeoutMs?: number): Promise<string> => {
    const r = await dockerd.docker(args, timeoutMs === undefined ? {} : { timeoutMs });
    assert.equal(r.code, 0, `docker ${args.join(' ')}:\n${r.stderr}`);
    return r.stdout;
  };
  const logs = async (container: string): Promise<LogLine[]> => parseLogLines(await docker(['logs', container]));
  const runRegcache = async (name: string): Promise<void> => {
    proxyPort = await freePort();
    await docker([
      'run',
      '-d',
      '--name',
      name,
      '--network',
      'host',
      // The image's HEALTHCHECK command, run every 2 s rather than every 30 s (Docker 20.10 has no
      // --start-interval): the command is what is tested, the wait for its first run is not.
      '--health-interval',
      '2s',
      ...VOLUMES,
      '-v',
      `${upstream.ca.certFile}:/etc/regcache/upstream-ca.pem:ro`,
      '-e',
      `PORT=${proxyPort}`,
      '-e',
      `MIRROR_PORT=${await freePort()}`,
      '-e',
      `CONNECT_TO=registry-1.docker.io:443:127.0.0.1:${upstream.registry.port}`,
      '-e',
      'UPSTREAM_CA_FILE=/etc/regcache/upstream-ca.pem',
      IMAGE,
    ]);
  };
  const pull = async (out: string) => {
    const certDir = path.join(root, 'certs.d');
    await mkdir(certDir, { recursive: true });
    await writeFile(path.join(certDir, 'ca.crt'), await caCert());
    return skopeoCopyToDir('docker.io/library/hello:v1', path.join(root, out), {
      dir: path.join(root, 'skopeo'),
      certDir,
      env: { HTTPS_PROXY: `http://127.0.0.1:${proxyPort}`, NO_PROXY: '' },
    });
  };
  const caCert = async (): Promise<string> => {
    const res = await fetch(`http://127.0.0.1:${proxyPort}/ca.crt`);
    assert.equal(res.status, 200);
    return res.text();
  };

  before(async () => {
    root = await tmp.make('regcache-image');
    const timed = async <T>(what: string, step: () => Promise<T>): Promise<T> => {
      const started = Date.now();
      const value = await step();
      timings.push(`${what}: ${seconds(started)} s`);
      return value;
    };
    const script = async (args: string[], env: Record<string, string>): Promise<void> => {
      const r = await run('bash', [BASE_IMAGE_SCRIPT, ...args], {
        env: { ...process.env, PATH: BASE_PATH, TMPDIR: root, ...env } as Record<string, string>,
        timeoutMs: 600_000,
      });
      assert.equal(r.code, 0, `${BASE_IMAGE_SCRIPT} ${args.join(' ')}:\n${r.stdout}\n${r.stderr}`);
    };
    // The stand-in's root file system needs no daemon: it is built (the longest step) while dockerd starts,
    // the upstream is filled and the build context is copied. Every step is awaited before one failure
    // fails the hook, so after() stops whatever started.
    const baseTar = path.join(root, 'base.tar');
    const steps = await Promise.allSettled([
      timed('stand-in base root file system', () => script(['--tar', baseTar], {})),
      timed('upstream', async () => {
        upstream = await startUpstream(path.join(root, 'upstream'), ['registry-1.docker.io'], ['image-a', 'image-b']);
        await pushTo(upstream, 'library/hello', 'v1');
      }),
      timed('dockerd', async () => {
        // overlay2 where the kernel has it: with vfs every container started copies the whole image.
        dockerd = await startDockerd({ dir: path.join(root, 'd'), env: {}, overlay: true });
      }),
      buildContext(path.join(root, 'context')),
    ]);
    const failed = steps.find((r) => r.status === 'rejected');
    if (failed !== undefined) throw failed.reason;
    const context = path.join(root, 'context');
    timings.push(`dockerd storage driver: ${dockerd.storageDriver}`);
    await timed('stand-in base image import', () => script(['--import', baseTar], { DOCKER_HOST: `unix://${dockerd.socket}` }));

    const started = Date.now();
    const build = await dockerd.docker(['build', '--network', 'host', '-t', IMAGE, context], {
      env: { DOCKER_BUILDKIT: '1', BUILDKIT_PROGRESS: 'plain' },
      timeoutMs: 900_000,
    });
    assert.equal(build.code, 0, `docker build:\n${build.stderr.slice(-4000)}`);
    const size = Number((await docker(['image', 'inspect', '--format', '{{.Size}}', IMAGE])).trim());
    timings.push(`docker build: ${seconds(started)} s, image ${Math.round(size / 1e6)} MB`);
  });

  after(async () => {
    await dockerd?.stop();
    await upstream?.registry.stop();
    await tmp.cleanup();
  });

  it('holds the compiled output and production dependencies only, runs as node (uid 1000), no build CA', async (t) => {
    for (const line of timings) t.diagnostic(line);
    const probe = `const fs = require('node:fs'); console.log(JSON.stringify({ uid: process.getuid(), gid: process.getgid(), app: fs.readdirSync('.').sort(), typescript: fs.existsSync('node_modules/typescript'), undici: fs.existsSync('node_modules/undici') }))`;
    const seen = JSON.parse(await docker(['run', '--rm', '--network', 'host', '--entrypoint', 'node', IMAGE, '-e', probe])) as Record<string, unknown>;
    assert.deepEqual(seen, { uid: 1000, gid: 1000, app: ['dist', 'node_modules', 'package.json'], typescript: false, undici: true });
  });

  it('becomes healthy; a pull through it MISSes every blob, the next one HITs them all', async (t) => {
    const started = Date.now();
    await runRegcache('regcache');
    await waitFor(
      async () => {
        const state = JSON.parse(await docker(['inspect', '--format', '{{json .State}}', 'regcache'])) as { Status: string; Health?: { Status: string } };
        if (state.Status !== 'running' || state.Health?.Status === 'unhealthy')
          throw new Error(`the container is ${state.Status}, ${state.Health?.Status}:\n${await docker(['logs', 'regcache'])}`);
        return state.Health?.Status === 'healthy';
      },
      { timeoutMs: 120_000, intervalMs: 500, what: 'the HEALTHCHECK to report healthy' },
    );
    t.diagnostic(`healthy ${seconds(started)} s after docker run (checked every 2 s)`);

    const first = await pull('first');
    assert.equal(first.code, 0, first.stderr);
    // A request's line is written once regcache has finished with it (a MISS: after the commit), which may
    // be a moment after skopeo has every byte.
    const linesOf = async (n: number) => {
      let lines: Awaited<ReturnType<typeof blobGets>> = [];
      await waitFor(async () => (lines = blobGets(await logs('regcache'))).length >= n, { timeoutMs: 10_000, what: `${n} blob GET lines` });
      return lines;
    };
    const cold = await linesOf(upstream.blobs.length);
    assert.deepEqual(
      cold.map((l) => l.cache),
      upstream.blobs.map(() => 'MISS'),
    );
    assert.deepEqual(new Set(cold.map((l) => l.digest)), new Set(upstream.blobs));

    const second = await pull('second');
    assert.equal(second.code, 0, second.stderr);
    const warm = (await linesOf(cold.length + upstream.blobs.length)).slice(cold.length);
    assert.deepEqual(
      warm.map((l) => l.cache),
      upstream.blobs.map(() => 'HIT'),
    );
    await assertSkopeoDir(path.join(root, 'second'), upstream.image);
    for (const digest of upstream.blobs) assert.equal(await upstream.registry.countBlobGets(digest), 1, digest);
    await writeFile(path.join(root, 'ca-before.crt'), await caCert());
  });

  it(`stops gracefully on docker stop: exit code 0 well within ${STOP_TIMEOUT_S} s`, async (t) => {
    const started = Date.now();
    await docker(['stop', '--time', String(STOP_TIMEOUT_S), 'regcache']);
    const took = seconds(started);
    t.diagnostic(`docker stop took ${took} s`);
    assert.equal((await docker(['inspect', '--format', '{{.State.ExitCode}}', 'regcache'])).trim(), '0');
    assert.ok(took < STOP_TIMEOUT_S / 2, `took ${took} s`);
    const lines = await logs('regcache');
    assert.ok(
      lines.some((l) => l.msg === 'shutting down' && l.signal === 'SIGTERM'),
      'logged shutting down',
    );
    assert.ok(!lines.some((l) => l.level === 'error' || l.level === 'fatal'), JSON.stringify(lines.filter((l) => l.level === 'error' || l.level === 'fatal')));
  });

  it('a new container on the same volumes keeps the CA and the cache: the pull HITs with upstream down', async (t) => {
    await docker(['rm', 'regcache']);
    await upstream.registry.stop();
    let started = Date.now();
    await runRegcache('regcache-again');
    await waitFor(async () => (await logs('regcache-again')).some((l) => l.msg === 'listening'), {
      timeoutMs: 60_000,
      intervalMs: 250,
      what: 'regcache to listen',
    });
    t.diagnostic(`listening ${seconds(started)} s after docker run`);
    assert.equal(await caCert(), await readFile(path.join(root, 'ca-before.crt'), 'utf8'));
    const lines = await logs('regcache-again');
    assert.ok(
      lines.some((l) => l.msg === 'loaded CA' && l.created === false),
      'the CA was loaded, not created',
    );

    started = Date.now();
    const again = await pull('again');
    assert.equal(again.code, 0, again.stderr);
    t.diagnostic(`pulled in ${seconds(started)} s with upstream down`);
    await assertSkopeoDir(path.join(root, 'again'), upstream.image);
    const served = await logs('regcache-again');
    assert.deepEqual(
      blobGets(served).map((l) => l.cache),
      upstream.blobs.map(() => 'HIT'),
    );
    const tag = served.filter((l) => l.kind === 'manifest-by-tag');
    assert.ok(tag.length > 0 && tag.every((l) => l.cache === 'STALE'), `the tag is served from the cache because upstream is down: ${JSON.stringify(tag)}`);
  });

  it("docker-compose up in a fresh clone, with no .env and then with npm start's .env: healthy on 3128 and 5000, /ca and the cache on their volumes", async (t) => {
    // Compose publishes the file's own ports on the host: they must be free here.
    for (const port of [3128, 5000])
      assert.equal(
        (await fetch(`http://127.0.0.1:${port}/`).catch(() => null))?.status,
        undefined,
        `port ${port} is in use on this host: stop what listens there`,
      );
    const project = path.join(root, 'compose');
    await mkdir(project);
    await copyFile(path.join(ROOT, 'docker-compose.yaml'), path.join(project, 'docker-compose.yaml'));
    await docker(['tag', IMAGE, 'regcache:latest']); // the file's image; --no-build: built above from this tree
    const compose = async (args: string[]) => {
      const r = await run('docker-compose', ['--project-directory', project, '-p', 'regcachecompose', ...args], {
        env: { PATH: BASE_PATH, HOME: project, DOCKER_HOST: `unix://${dockerd.socket}` },
        cwd: project,
        timeoutMs: 180_000,
      });
      assert.equal(r.code, 0, `docker-compose ${args.join(' ')}:\n${r.stdout}\n${r.stderr}`);
      return r.stdout.trim();
    };
    // What `docker-compose ps -q regcache` prints, from the labels Compose puts on its containers: the docker
    // CLI answers in a tenth of the CPU of a Compose v1 run (Python, 1.2 s a call).
    const containerId = async () =>
      (
        await docker([
          'ps',
          '-q',
          '--no-trunc',
          '--filter',
          'label=com.docker.compose.project=regcachecompose',
          '--filter',
          'label=com.docker.compose.service=regcache',
        ])
      ).trim();
    const healthy = async (what: string): Promise<{ listening: LogLine; id: string }> => {
      const started = Date.now();
      await waitFor(async () => (await fetch('http://127.0.0.1:3128/healthz').catch(() => null))?.status === 200, {
        timeoutMs: 120_000,
        intervalMs: 500,
        what: `/healthz on the published port 3128 (${what})`,
      });
      t.diagnostic(`${what}: /healthz answered ${seconds(started)} s after up`);
      assert.equal((await fetch('http://127.0.0.1:5000/v2/')).status, 200, 'the mirror on the published port 5000');
      const id = await containerId();
      const listening = (await logs(id)).filter((l) => l.msg === 'listening').at(-1);
      assert.ok(listening, 'a listening line');
      return { listening, id };
    };
    try {
      await compose(['up', '-d', '--no-build']);
      const { listening: first, id: firstId } = await healthy('no .env');
      assert.equal(first.port, 3128);
      assert.equal(first.mirrorPort, 5000);
      assert.equal(first.store, '/docker_mirror_cache');
      const ca = await (await fetch('http://127.0.0.1:3128/ca.crt')).text();

      // .env.example's npm start lines uncommented, as its header tells npm start users to do, plus a setting.
      const dotenv = (await readFile(path.join(ROOT, '.env.example'), 'utf8'))
        .replace(/^#((?:PORT|CA_DIR|MIRROR_PORT|CACHE_DIR)=.*)$/gm, '$1')
        .replace(/^CACHE_MAX_SIZE=.*$/m, 'CACHE_MAX_SIZE=3g')
        // npm start's values away from the image's, as a user's would be:
        .concat('\nPORT=9128\nMIRROR_PORT=9500\nCA_DIR=./data/ca\nCACHE_DIR=./data/cache\n');
      await writeFile(path.join(project, '.env'), dotenv);
      await compose(['up', '-d', '--no-build']); // recreates the container: its environment changed
      const { listening: second, id } = await healthy('with .env');
      assert.equal(second.port, 3128);
      assert.equal(second.mirrorPort, 5000);
      assert.equal(second.store, '/docker_mirror_cache');
      assert.ok((second.settings as string[]).includes('CACHE_MAX_SIZE'), `the .env setting reached regcache: ${JSON.stringify(second.settings)}`);
      assert.notEqual(id, firstId, 'the container was recreated with the .env');
      const env = JSON.parse(await docker(['inspect', '--format', '{{json .Config.Env}}', id])) as string[];
      for (const setting of ['PORT=3128', 'MIRROR_PORT=5000', 'CA_DIR=/ca', 'CACHE_DIR=/docker_mirror_cache', 'CACHE_MAX_SIZE=3g'])
        assert.ok(env.includes(setting), `${setting} in ${JSON.stringify(env)}`);
      assert.equal(await (await fetch('http://127.0.0.1:3128/ca.crt')).text(), ca, 'the same CA, from the ca volume');
    } finally {
      await compose(['down', '-v', '--timeout', '15']);
    }
  });

  it('a volume owned by root, as a root-run container leaves it, stops it with one fatal line: chown 1000:1000', async () => {
    for (const [variable, dir] of [
      ['CA_DIR', '/ca'],
      ['CACHE_DIR', '/docker_mirror_cache'],
    ] as const) {
      const name = `root-owned-${variable.toLowerCase()}`;
      const hostDir = path.join(root, name);
      await mkdir(hostDir, { mode: 0o755 }); // made by this test as root, as rpardini's container made it
      const mounts = VOLUMES.map((v) => (v.endsWith(`:${dir}`) ? `${hostDir}:${dir}` : v));
      const r = await dockerd.docker(['run', '--name', name, '--network', 'host', ...mounts, '-e', `PORT=${await freePort()}`, '-e', 'MIRROR_PORT=0', IMAGE]);
      assert.equal(r.code, 1, `${dir}: ${r.stdout}${r.stderr}`);
      const fatal = parseLogLines(r.stdout).filter((l) => l.level === 'fatal');
      assert.equal(fatal.length, 1, r.stdout);
      assert.equal(fatal[0]!.variable, variable);
      assert.ok(
        String(fatal[0]!.error).includes(`${dir} is not writable by this process (uid 1000, gid 1000): give it to uid 1000, e.g. chown -R 1000:1000 ${dir}`),
        JSON.stringify(fatal[0]),
      );
      assert.deepEqual(await readdir(hostDir), [], 'nothing was written before the check');
    }
  });
});

/**
 * The build context: the work tree as git sees it (tracked and new files, nothing ignored), plus the
 * host's CA bundle as build-ca.pem, so the work tree itself is never written to.
 */
async function buildContext(dir: string): Promise<string> {
  const { stdout } = await promisify(execFile)('git', ['ls-files', '-z', '--cached', '--others', '--exclude-standard'], { cwd: ROOT, maxBuffer: 16 << 20 });
  for (const file of stdout.split('\0').filter((f) => f !== '' && existsSync(path.join(ROOT, f)))) {
    await mkdir(path.dirname(path.join(dir, file)), { recursive: true });
    await copyFile(path.join(ROOT, file), path.join(dir, file));
  }
  if (existsSync(HOST_CA_BUNDLE)) await copyFile(HOST_CA_BUNDLE, path.join(dir, 'build-ca.pem'));
  return dir;
}
