// tier: e2e
// Every common client through both doors, as the README's table of tested clients says: dockerd (proxy and
// registry-mirrors), docker build with BuildKit pulling its FROM image, containerd (ctr with hosts.toml),
// podman and buildah (HTTPS_PROXY, and registries.conf mirrors), skopeo. Each pulls an image of its own
// twice: the first pull MISSes every blob, the second (after the client dropped its copy) HITs them all,
// read from regcache's log lines. Docker Hub is a real docker-registry (CONNECT_TO). The versions each
// client reported make the table; the last test fails when the README's differs (run it with
// UPDATE_CLIENTS_TABLE=1 to write the table into the README), so the README names only what ran here.
import assert from 'node:assert/strict';
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { startContainerd, type Containerd } from './harness/containerd.js';
import { runContainersTool, type ContainersTool } from './harness/containers-tools.js';
import { startDockerd, type Dockerd } from './harness/dockerd.js';
import { makeImage, type Image } from './harness/images.js';
import { freePort } from './harness/ports.js';
import { run, type RunResult } from './harness/proc.js';
import type { LogLine, Regcache } from './harness/regcache.js';
import { runSkopeo, skopeoCopyToDir } from './harness/skopeo.js';
import { TmpDirs } from './harness/tmp.js';
import { pushTo, startProxyFor, startUpstream, type Upstream } from './support/upstream-fixture.js';

const ROOT = path.resolve(import.meta.dirname, '..');
const README = path.join(ROOT, 'README.md');
const TABLE_START = '<!-- tested-clients: written from test/clients.test.ts -->';
const TABLE_END = '<!-- /tested-clients -->';

type Door = 'proxy' | 'mirror';

interface ClientCase {
  client: string;
  door: Door;
  registry?: string; // where its image is: Docker Hub (docker.io) unless this says otherwise
  setup: [string, string]; // the two lines an operator writes, as this test wrote them
  version: () => Promise<string>;
  /** Pulls ref; round 2 comes after drop() removed the client's copy. */
  pull: (ref: string, slug: string) => Promise<RunResult>;
  drop: (ref: string, slug: string) => Promise<RunResult>;
}

interface Tested {
  client: string;
  version: string;
  door: Door;
  setup: [string, string];
}

const ok = (r: RunResult, what: string): RunResult => {
  assert.equal(r.code, 0, `${what}:\n${r.stdout}\n${r.stderr}`);
  return r;
};
const versionOf = async (command: string, args: string[], pattern: RegExp): Promise<string> => {
  const r = ok(await run(command, args, { env: { PATH: process.env.PATH ?? '/usr/bin:/bin' } }), `${command} ${args.join(' ')}`);
  const m = pattern.exec(r.stdout + r.stderr);
  assert.ok(m, `${command}'s version in: ${r.stdout}`);
  return m[1]!;
};
const blobGets = (lines: LogLine[]) => lines.filter((l) => l.kind === 'blob' && l.method === 'GET');

export function renderClientsTable(rows: Tested[]): string {
  const door = (d: Door) => (d === 'proxy' ? 'proxy (`HTTPS_PROXY`, port 3128)' : 'mirror (port 5000)');
  return [
    '| Client | Version | Door | Set-up |',
    '| --- | --- | --- | --- |',
    ...rows.map((r) => `| ${r.client} | ${r.version} | ${door(r.door)} | ${r.setup[0]}<br>${r.setup[1]} |`),
  ].join('\n');
}

describe('every common client, through the proxy and through the mirror', () => {
  const tmp = new TmpDirs();
  let root: string;
  let upstream: Upstream;
  let proxy: Regcache;
  let certDir: string; // holds only regcache's ca.crt
  const images = new Map<string, Image>();
  const tested: Tested[] = [];
  const daemons: { stop(): Promise<void> }[] = [];

  // Started by the first case that needs each, so one case can run alone (--test-name-pattern).
  const once = <T extends { stop(): Promise<void> }>(start: () => Promise<T>): (() => Promise<T>) => {
    let started: Promise<T> | null = null;
    return () =>
      (started ??= start().then((d) => {
        daemons.push(d);
        return d;
      }));
  };
  // Go reads SSL_CERT_FILE instead of the system roots: here it stands for update-ca-certificates.
  const dockerdProxy = once((): Promise<Dockerd> =>
    startDockerd({ dir: path.join(root, 'dp'), env: { HTTPS_PROXY: proxy.proxyUrl, NO_PROXY: '', SSL_CERT_FILE: proxy.caFile } }),
  );
  // No SSL_CERT_FILE: this one trusts regcache's CA for registry.test through /etc/docker/certs.d only.
  const dockerdCertsD = once(async (): Promise<Dockerd> => {
    const etc = path.join(root, 'etc-docker');
    await mkdir(path.join(etc, 'certs.d', 'registry.test'), { recursive: true });
    await writeFile(path.join(etc, 'certs.d', 'registry.test', 'ca.crt'), await readFile(proxy.caFile));
    await mkdir(path.join(etc, 'certs.d', 'registry-1.docker.io'), { recursive: true });
    await writeFile(path.join(etc, 'certs.d', 'registry-1.docker.io', 'ca.crt'), await readFile(proxy.caFile));
    return startDockerd({ dir: path.join(root, 'dc'), env: { HTTPS_PROXY: proxy.proxyUrl, NO_PROXY: '' }, etcDocker: etc });
  });
  const dockerdMirror = once(async (): Promise<Dockerd> => {
    const mirror = `127.0.0.1:${proxy.mirrorPort}`;
    return startDockerd({ dir: path.join(root, 'dm'), env: {}, daemonConfig: { 'registry-mirrors': [`http://${mirror}`], 'insecure-registries': [mirror] } });
  });
  const containerd = once((): Promise<Containerd> => startContainerd({ dir: path.join(root, 'c') }));

  const dockerPull = (daemon: () => Promise<Dockerd>): Pick<ClientCase, 'pull' | 'drop'> => ({
    pull: async (ref) => (await daemon()).docker(['pull', ref]),
    drop: async (ref) => (await daemon()).docker(['rmi', ref]),
  });
  const buildkitBuild = (daemon: () => Promise<Dockerd>): Pick<ClientCase, 'pull' | 'drop'> => ({
    pull: async (ref, slug) => {
      const context = path.join(root, 'build', slug);
      await mkdir(context, { recursive: true });
      await writeFile(path.join(context, 'Dockerfile'), `FROM ${ref}\nLABEL regcache.test=${slug}\n`);
      return (await daemon()).docker(['build', '-t', `built-${slug}`, context], { env: { DOCKER_BUILDKIT: '1', BUILDKIT_PROGRESS: 'plain' } });
    },
    // The built image and BuildKit's cache (which holds the FROM image's blobs) go.
    drop: async (_ref, slug) => {
      const d = await daemon();
      ok(await d.docker(['rmi', `built-${slug}`]), 'docker rmi');
      return d.docker(['builder', 'prune', '--all', '--force']);
    },
  });
  const ctrPull = (door: Door): Pick<ClientCase, 'pull' | 'drop'> => {
    const hostsDir = () => path.join(root, `hosts-${door}`);
    return {
      pull: async (ref) => {
        const hostsToml = path.join(hostsDir(), 'docker.io', 'hosts.toml');
        await mkdir(path.dirname(hostsToml), { recursive: true });
        if (door === 'mirror') {
          // The file regcache hands out (GET /setup/containerd), as an operator would use it.
          const setup = await (await fetch(`${proxy.proxyUrl}/setup/containerd`)).text();
          const block = setup.split('# --- ').find((b) => b.startsWith('docker.io\n'));
          assert.ok(block, setup);
          await writeFile(hostsToml, block.split('\n').slice(1).join('\n'));
        } else {
          await writeFile(
            hostsToml,
            `server = "https://registry-1.docker.io"\n\n[host."https://registry-1.docker.io"]\n  ca = ${JSON.stringify(path.join(certDir, 'ca.crt'))}\n`,
          );
        }
        const env: Record<string, string> = door === 'proxy' ? { HTTPS_PROXY: proxy.proxyUrl, NO_PROXY: '' } : {};
        return (await containerd()).ctr(['--namespace', door, 'images', 'pull', '--hosts-dir', hostsDir(), ref], env);
      },
      drop: async (ref) => (await containerd()).ctr(['--namespace', door, 'images', 'rm', '--sync', ref]),
    };
  };
  const mirrorRegistriesConf = () =>
    `[[registry]]\nprefix = "docker.io"\nlocation = "registry-1.docker.io"\n\n[[registry.mirror]]\nlocation = "127.0.0.1:${proxy.mirrorPort}"\ninsecure = true\n`;
  const containersToolPull = (tool: ContainersTool, door: Door): Pick<ClientCase, 'pull' | 'drop'> => {
    const options = () => ({
      dir: path.join(root, `${tool}-${door}`),
      ...(door === 'mirror' ? { registriesConf: mirrorRegistriesConf() } : { env: { HTTPS_PROXY: proxy.proxyUrl, NO_PROXY: '' } }),
    });
    return {
      pull: (ref) => runContainersTool(tool, door === 'proxy' ? ['pull', '--cert-dir', certDir, ref] : ['pull', ref], options()),
      drop: (ref) => runContainersTool(tool, ['rmi', ref], options()),
    };
  };
  const skopeoPull = (door: Door): Pick<ClientCase, 'pull' | 'drop'> => {
    let round = 0;
    return {
      pull: async (ref, slug) => {
        const out = path.join(root, 'skopeo-out', `${slug}-${++round}`);
        await mkdir(path.dirname(out), { recursive: true });
        const scratch = path.join(root, `skopeo-${door}`);
        if (door === 'proxy') return skopeoCopyToDir(ref, out, { dir: scratch, certDir, env: { HTTPS_PROXY: proxy.proxyUrl, NO_PROXY: '' } });
        const conf = path.join(root, 'skopeo-registries.conf');
        await writeFile(conf, mirrorRegistriesConf());
        return runSkopeo(['--registries-conf', conf, 'copy', `docker://${ref}`, `dir:${out}`], { dir: scratch });
      },
      drop: async () => ({ code: 0, stdout: '', stderr: '' }), // each copy goes to a new directory
    };
  };

  const dockerdVersion = () => versionOf('dockerd', ['--version'], /version (\S+),/);
  const containersVersion = (tool: string) => () => versionOf(tool, ['--version'], /version (\S+)/);
  const proxyTrust = '`HTTPS_PROXY=http://regcache:3128`';
  const mirrorConf: [string, string] = [
    '`registries.conf`: `[[registry]]` `prefix = "docker.io"`, `location = "registry-1.docker.io"`',
    '`[[registry.mirror]]` `location = "regcache:5000"`, `insecure = true`',
  ];
  const cases: ClientCase[] = [
    {
      client: 'dockerd',
      door: 'proxy',
      setup: [`${proxyTrust} in dockerd's environment (systemd drop-in)`, "regcache's `ca.crt` in the system trust store (`update-ca-certificates`)"],
      version: dockerdVersion,
      ...dockerPull(dockerdProxy),
    },
    {
      client: 'dockerd, a registry other than Docker Hub',
      door: 'proxy',
      registry: 'registry.test',
      setup: [
        `${proxyTrust} in dockerd's environment (systemd drop-in)`,
        "regcache's `ca.crt` as `/etc/docker/certs.d/<registry>/ca.crt` (dockerd reads no `certs.d` for Docker Hub)",
      ],
      version: dockerdVersion,
      ...dockerPull(dockerdCertsD),
    },
    {
      client: 'dockerd',
      door: 'mirror',
      setup: ['`/etc/docker/daemon.json`: `"registry-mirrors": ["http://regcache:5000"]`', '`"insecure-registries": ["regcache:5000"]`'],
      version: dockerdVersion,
      ...dockerPull(dockerdMirror),
    },
    {
      client: "`docker build` (dockerd's BuildKit)",
      door: 'proxy',
      setup: ['dockerd set up for the proxy, as above', '`DOCKER_BUILDKIT=1 docker build` (the `FROM` image is pulled by dockerd)'],
      version: dockerdVersion,
      ...buildkitBuild(dockerdProxy),
    },
    {
      client: "`docker build` (dockerd's BuildKit)",
      door: 'mirror',
      setup: ['dockerd set up for the mirror, as above', '`DOCKER_BUILDKIT=1 docker build`'],
      version: dockerdVersion,
      ...buildkitBuild(dockerdMirror),
    },
    {
      client: 'containerd (`ctr`)',
      door: 'proxy',
      setup: [
        `${proxyTrust} in containerd's (here: \`ctr\`'s) environment`,
        '`certs.d/docker.io/hosts.toml`: `[host."https://registry-1.docker.io"]` `ca = "regcache-ca.crt"`',
      ],
      version: () => versionOf('ctr', ['--version'], /ctr \S+ (\S+)/),
      ...ctrPull('proxy'),
    },
    {
      client: 'containerd (`ctr`)',
      door: 'mirror',
      setup: ['`GET /setup/containerd`: its `docker.io` block as `certs.d/docker.io/hosts.toml`', '`config_path` set to that `certs.d` (`ctr --hosts-dir`)'],
      version: () => versionOf('ctr', ['--version'], /ctr \S+ (\S+)/),
      ...ctrPull('mirror'),
    },
    {
      client: 'podman',
      door: 'proxy',
      setup: [proxyTrust, "`--cert-dir DIR`, DIR holding regcache's `ca.crt`"],
      version: containersVersion('podman'),
      ...containersToolPull('podman', 'proxy'),
    },
    { client: 'podman', door: 'mirror', setup: mirrorConf, version: containersVersion('podman'), ...containersToolPull('podman', 'mirror') },
    {
      client: 'buildah',
      door: 'proxy',
      setup: [proxyTrust, "`--cert-dir DIR`, DIR holding regcache's `ca.crt`"],
      version: containersVersion('buildah'),
      ...containersToolPull('buildah', 'proxy'),
    },
    { client: 'buildah', door: 'mirror', setup: mirrorConf, version: containersVersion('buildah'), ...containersToolPull('buildah', 'mirror') },
    {
      client: 'skopeo',
      door: 'proxy',
      setup: [proxyTrust, "`--src-cert-dir DIR`, DIR holding regcache's `ca.crt`"],
      version: containersVersion('skopeo'),
      ...skopeoPull('proxy'),
    },
    { client: 'skopeo', door: 'mirror', setup: mirrorConf, version: containersVersion('skopeo'), ...skopeoPull('mirror') },
  ];
  const slugOf = (c: ClientCase) => `${c.client.replace(/[^a-z]+/gi, '-').replace(/^-|-$/g, '')}-${c.door}`.toLowerCase();

  before(async () => {
    root = await tmp.make('regcache-clients');
    // One image per case, none sharing a blob with another: each case's first pull is its own MISS.
    upstream = await startUpstream(path.join(root, 'upstream'), ['registry-1.docker.io', 'registry.test'], ['clients-shared']);
    for (const c of cases) {
      const slug = slugOf(c);
      const image = await makeImage(path.join(root, 'images', slug), { layers: [0, 1].map((i) => ({ size: 200_000 + i * 50_000, seed: `${slug}-${i}` })) });
      images.set(slug, image);
      await pushTo({ ...upstream, image }, `library/${slug}`, 'v1');
    }
    proxy = await startProxyFor(upstream, {
      dir: path.join(root, 'proxy'),
      env: { MIRROR_PORT: String(await freePort()), ADDITIONAL_REGISTRIES: 'registry.test' },
      routes: { 'registry-1.docker.io': upstream.registry.port, 'registry.test': upstream.registry.port },
    });
    certDir = path.join(root, 'certs.d');
    await mkdir(certDir);
    await writeFile(path.join(certDir, 'ca.crt'), await readFile(proxy.caFile));
  });

  after(async () => {
    for (const d of daemons.reverse()) await d.stop();
    await proxy?.stop();
    await upstream?.registry.stop();
    await tmp.cleanup();
  });

  for (const c of cases) {
    it(`${c.client} through the ${c.door}: the first pull MISSes every blob, the second HITs them all`, async () => {
      const slug = slugOf(c);
      const image = images.get(slug)!;
      const blobs = [image.config.digest, ...image.layers.map((l) => l.digest)];
      const ref = `${c.registry ?? 'docker.io'}/library/${slug}:v1`;
      const rounds: LogLine[][] = [];
      for (const round of [1, 2]) {
        if (round === 2) ok(await c.drop(ref, slug), `${c.client}: dropping its copy`);
        const mark = (await proxy.logs()).length;
        ok(await c.pull(ref, slug), `${c.client} (${c.door}), pull ${round}`);
        rounds.push(blobGets(await proxy.requests(mark)));
      }
      const [first, second] = rounds as [LogLine[], LogLine[]];
      for (const digest of blobs) {
        assert.ok(
          first.some((l) => l.digest === digest && l.cache === 'MISS'),
          `pull 1 fetched ${digest} from upstream: ${JSON.stringify(first)}`,
        );
      }
      assert.deepEqual(new Set(second.map((l) => l.digest)), new Set(blobs), `pull 2 read every blob from regcache: ${JSON.stringify(second)}`);
      assert.deepEqual(
        second.filter((l) => l.cache !== 'HIT'),
        [],
        'pull 2 is all HIT',
      );
      for (const digest of blobs) assert.equal(await upstream.registry.countBlobGets(digest), 1, `upstream served ${digest} once`);
      tested.push({ client: c.client, version: await c.version(), door: c.door, setup: c.setup });
    });
  }

  // What the README says of certs.d, and why the table's first row trusts through the system store.
  it('dockerd ignores /etc/docker/certs.d for Docker Hub: with only certs.d, a Docker Hub pull fails the TLS check', async () => {
    const r = await (await dockerdCertsD()).docker(['pull', 'docker.io/library/clients-shared-never-pushed:v1']);
    assert.notEqual(r.code, 0);
    assert.match(r.stderr, /x509: certificate signed by unknown authority/);
  });

  it("the README's table of tested clients is the one these tests ran", async (t) => {
    const order = (r: Tested) => cases.findIndex((c) => c.client === r.client && c.door === r.door);
    const table = renderClientsTable([...tested].sort((a, b) => order(a) - order(b)));
    t.diagnostic(`\n${table}`);
    const readme = await readFile(README, 'utf8');
    const start = readme.indexOf(TABLE_START);
    const end = readme.indexOf(TABLE_END);
    assert.ok(start >= 0 && end > start, `README.md holds the table between ${TABLE_START} and ${TABLE_END}`);
    const current = readme.slice(start + TABLE_START.length, end).trim();
    if (process.env.UPDATE_CLIENTS_TABLE === '1' && tested.length === cases.length) {
      await writeFile(README, `${readme.slice(0, start + TABLE_START.length)}\n${table}\n${readme.slice(end)}`);
      return;
    }
    assert.equal(tested.length, cases.length, 'every client case passed: the table names only what ran');
    assert.equal(current, table, 'the README table differs from what ran here: UPDATE_CLIENTS_TABLE=1 writes this one');
  });
});
