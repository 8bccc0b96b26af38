// tier: e2e
// The fleet's deploy files (deploy/, docs/scale-out.md "Deploying a fleet"): the Compose files as Debian's
// docker-compose (v1) reads them, haproxy's configuration as haproxy checks it, and the Kubernetes
// manifests parsed and held against what regcache reads and listens on. No cluster, no Docker Hub: what
// can be checked without them.
import assert from 'node:assert/strict';
import { copyFile, readFile, stat, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { parse, parseAllDocuments } from 'yaml';
import { loadConfig, type Env } from '../src/config/config.js';
import { variableNames } from '../src/config/settings.js';
import { SHUTDOWN_GRACE_MS } from '../src/assembly/proxy.js';
import { loadOrCreateCa } from '../src/tls/certificate-authority.js';
import { BASE_PATH } from './harness/containerd.js';
import { run } from './harness/proc.js';
import { TmpDirs } from './harness/tmp.js';

const ROOT = path.resolve(import.meta.dirname, '..');
const COMPOSE = path.join(ROOT, 'deploy', 'compose');
const KUBERNETES = path.join(ROOT, 'deploy', 'kubernetes');

// The AWS SDK's own variables (credentials and region chain), which regcache passes to it unread.
const SDK_VARIABLES = [
  'AWS_ACCESS_KEY_ID',
  'AWS_SECRET_ACCESS_KEY',
  'AWS_SESSION_TOKEN',
  'AWS_REGION',
  'AWS_PROFILE',
  'AWS_ROLE_ARN',
  'AWS_WEB_IDENTITY_TOKEN_FILE',
];

/** Every variable regcache reads (the settings table's names and aliases), and the AWS SDK's. A name not in it is a typo. */
function regcacheVariables(): Set<string> {
  return new Set([...variableNames(), ...SDK_VARIABLES]);
}

function unknownVariables(names: Iterable<string>, known: Set<string>): string[] {
  return [...names].filter((n) => !known.has(n));
}

/** The image's ENV (Dockerfile): the ports and directories regcache gets when nothing overrides them. */
async function imageEnv(): Promise<Record<string, string>> {
  const dockerfile = await readFile(path.join(ROOT, 'Dockerfile'), 'utf8');
  const runtime = dockerfile.slice(dockerfile.lastIndexOf('\nFROM '));
  const block = /^ENV ((?:.*\\\n)*.*)$/m.exec(runtime)?.[1] ?? '';
  const env = Object.fromEntries([...block.matchAll(/([A-Z_]+)=(\S+)/g)].map((m) => [m[1]!, m[2]!]));
  assert.ok(env.PORT && env.MIRROR_PORT && env.CA_DIR && env.CACHE_DIR, `the image's ENV: ${JSON.stringify(env)}`);
  return env;
}

/** NAME=value lines of an env file (comments and blank lines skipped). */
function envFile(text: string): Record<string, string> {
  return Object.fromEntries(
    text
      .split('\n')
      .filter((l) => /^[A-Za-z_][A-Za-z0-9_]*=/.test(l))
      .map((l) => [l.slice(0, l.indexOf('=')), l.slice(l.indexOf('=') + 1)]),
  );
}

describe('deploy/compose: a fleet behind haproxy', () => {
  const tmp = new TmpDirs();
  let project: string;
  let known: Set<string>;
  const compose = (files: string[], args: string[], env: Record<string, string> = {}) =>
    run('docker-compose', ['--project-directory', project, ...files.flatMap((f) => ['-f', path.join(project, f)]), ...args], {
      env: { PATH: BASE_PATH, HOME: project, ...env },
      cwd: project,
    });
  const FLEET = 'docker-compose.fleet.yaml';
  const MINIO = 'docker-compose.minio.yaml';

  before(async () => {
    project = await tmp.make('regcache-fleet-compose');
    for (const f of [FLEET, MINIO, 'haproxy.cfg', '.env.example']) await copyFile(path.join(COMPOSE, f), path.join(project, f));
    known = regcacheVariables();
  });
  after(() => tmp.cleanup());

  it('asks for the .env its header has operators copy first', async () => {
    const r = await compose([FLEET], ['config', '--quiet']);
    assert.notEqual(r.code, 0);
    assert.match(r.stderr, /find env file: .*\/\.env/);
  });

  it('names the credentials MinIO needs when .env leaves them out', async () => {
    const example = await readFile(path.join(COMPOSE, '.env.example'), 'utf8');
    await writeFile(path.join(project, '.env'), example.replace(/^AWS_(ACCESS_KEY_ID|SECRET_ACCESS_KEY)=.*\n/gm, ''));
    const r = await compose([FLEET, MINIO], ['config', '--quiet']);
    assert.notEqual(r.code, 0);
    assert.match(r.stderr, /AWS_ACCESS_KEY_ID in deploy\/compose\/\.env|AWS_SECRET_ACCESS_KEY in deploy\/compose\/\.env/);
  });

  it('with MinIO and .env.example as .env: replicas on the bucket with one shared CA, reached through the balancer only', async () => {
    await copyFile(path.join(project, '.env.example'), path.join(project, '.env'));
    const r = await compose([FLEET, MINIO], ['config']);
    assert.equal(r.code, 0, r.stderr);
    const config = parse(r.stdout) as { services: Record<string, Service>; volumes: Record<string, unknown> };
    const { regcache, balancer, minio, bucket } = config.services;
    assert.ok(regcache && balancer && minio && bucket, `services: ${Object.keys(config.services).join(', ')}`);
    const image = await imageEnv();

    assert.equal(regcache.ports, undefined, 'replicas publish no ports: --scale runs N of them');
    assert.equal(regcache.environment?.WORKERS, '1');
    assert.equal(regcache.environment?.CACHE_STORE, 's3://regcache');
    assert.equal(regcache.environment?.S3_ENDPOINT, 'http://minio:9000');
    assert.ok(
      regcache.volumes?.some((v) => /^ca:\/ca(:rw)?$/.test(v)),
      `the CA volume is shared: ${regcache.volumes?.join(' ')}`,
    );
    assert.ok(
      regcache.volumes?.some((v) => v === image.CACHE_DIR),
      'CACHE_DIR on an anonymous volume of its own',
    );
    assert.ok('ca' in config.volumes, 'the CA volume is a named volume');
    assert.deepEqual(regcache.depends_on, { bucket: { condition: 'service_completed_successfully' } }, 'replicas start once the bucket exists');
    for (const name of ['PORT', 'MIRROR_PORT', 'CA_DIR', 'CACHE_DIR']) assert.equal(regcache.environment?.[name], undefined, `${name} stays the image's`);
    assert.deepEqual(
      unknownVariables(Object.keys(regcache.environment ?? {}), known),
      [],
      'every variable the replicas get is one regcache (or the AWS SDK) reads',
    );
    const settings = loadConfig(regcache.environment as Env);
    assert.equal(settings.cacheStore?.bucket, 'regcache');
    assert.equal(settings.workers, 1);

    assert.deepEqual(
      balancer.ports?.map((p) => p.target).sort(),
      [Number(image.PORT), Number(image.MIRROR_PORT)].sort(),
      'the balancer publishes the proxy and mirror ports',
    );
    assert.ok(
      balancer.volumes?.some((v) => v.endsWith('/haproxy.cfg:/usr/local/etc/haproxy/haproxy.cfg:ro')),
      `haproxy.cfg mounted: ${balancer.volumes?.join(' ')}`,
    );
    assert.equal(minio.environment?.MINIO_ROOT_USER, regcache.environment?.AWS_ACCESS_KEY_ID, "MinIO's user is the replicas'");
    assert.equal(bucket.environment?.CACHE_STORE, regcache.environment?.CACHE_STORE, 'the one-shot creates the bucket the replicas use');
  });

  it('alone, on an S3 endpoint .env names: no MinIO', async () => {
    const example = await readFile(path.join(COMPOSE, '.env.example'), 'utf8');
    await writeFile(
      path.join(project, '.env'),
      example.replace(/^S3_ENDPOINT=.*$/m, 'S3_ENDPOINT=https://rgw.example.internal').replace(/^S3_FORCE_PATH_STYLE=.*$/m, 'S3_FORCE_PATH_STYLE=false'),
    );
    const r = await compose([FLEET], ['config']);
    assert.equal(r.code, 0, r.stderr);
    const config = parse(r.stdout) as { services: Record<string, Service> };
    assert.deepEqual(Object.keys(config.services).sort(), ['balancer', 'regcache']);
    assert.equal(config.services.regcache!.environment?.S3_ENDPOINT, 'https://rgw.example.internal');
    assert.equal(config.services.regcache!.depends_on, undefined);
  });

  it('.env.example holds only settings regcache or the AWS SDK reads, with values regcache accepts', async () => {
    const example = envFile(await readFile(path.join(COMPOSE, '.env.example'), 'utf8'));
    assert.deepEqual(unknownVariables(Object.keys(example), known), []);
    assert.equal(loadConfig(example).cacheStore?.display, 's3://regcache/');
  });

  it("haproxy.cfg is valid for haproxy and balances the replicas' proxy and mirror ports, checked on /readyz", async () => {
    const r = await run('haproxy', ['-c', '-f', path.join(COMPOSE, 'haproxy.cfg')], { env: { PATH: BASE_PATH } });
    assert.equal(r.code, 0, r.stdout + r.stderr);
    const cfg = await readFile(path.join(COMPOSE, 'haproxy.cfg'), 'utf8');
    const image = await imageEnv();
    assert.match(cfg, /^\s*mode tcp$/m, 'TCP: CONNECT and the TLS inside stay on one replica');
    const binds = [...cfg.matchAll(/^\s*bind :(\d+)$/gm)].map((m) => m[1]);
    assert.deepEqual(binds.sort(), [image.PORT, image.MIRROR_PORT].sort());
    const servers = [...cfg.matchAll(/^\s*server-template \S+ \S+ regcache:(\d+) check(?: port (\d+))?$/gm)].map((m) => ({
      port: m[1],
      checkPort: m[2] ?? m[1],
    }));
    assert.deepEqual(servers.map((s) => s.port).sort(), [image.PORT, image.MIRROR_PORT].sort(), 'the replicas by their service name, on both ports');
    for (const s of servers) assert.equal(s.checkPort, image.PORT, '/readyz is on the proxy port');
    assert.equal([...cfg.matchAll(/^\s*http-check send meth GET uri \/readyz$/gm)].length, 2);
  });
});

interface Service {
  ports?: { target: number; published: number }[];
  environment?: Record<string, string>;
  volumes?: string[];
  depends_on?: Record<string, { condition: string }>;
}

// The manifests as Kubernetes reads them: YAML 1.1 (0440 is octal).
interface Manifest {
  apiVersion: string;
  kind: string;
  metadata: { name: string; labels?: Record<string, string> };
  [field: string]: unknown;
}

interface Container {
  name: string;
  ports: { name?: string; containerPort: number }[];
  env?: { name: string; value?: string; valueFrom?: { secretKeyRef?: { name: string; key: string } } }[];
  envFrom?: { configMapRef?: { name: string }; secretRef?: { name: string } }[];
  volumeMounts: { name: string; mountPath: string; readOnly?: boolean }[];
  securityContext?: { runAsUser?: number; readOnlyRootFilesystem?: boolean; allowPrivilegeEscalation?: boolean };
  livenessProbe?: Probe;
  readinessProbe?: Probe;
  startupProbe?: Probe;
  lifecycle?: { preStop?: { exec?: { command: string[] } } };
}
interface Probe {
  httpGet: { path: string; port: string | number };
}
interface PodSpec {
  containers: Container[];
  securityContext?: { runAsUser?: number; runAsNonRoot?: boolean; fsGroup?: number };
  terminationGracePeriodSeconds?: number;
  volumes: { name: string; secret?: { secretName: string; defaultMode?: number; items?: { key: string }[] }; emptyDir?: unknown }[];
}

describe('deploy/kubernetes: the manifests', () => {
  let resources: Manifest[];
  let generated: { name: string; keys: string[] }[];
  let deployment: Manifest & {
    spec: { replicas: number; selector: { matchLabels: Record<string, string> }; template: { metadata: { labels: Record<string, string> }; spec: PodSpec } };
  };
  let pod: PodSpec;
  let image: Record<string, string>;

  const byKind = (kind: string) => resources.filter((r) => r.kind === kind);
  const matches = (selector: Record<string, string>, labels: Record<string, string>) => Object.entries(selector).every(([k, v]) => labels[k] === v);
  const containerPort = (c: Container, port: string | number) =>
    (typeof port === 'number' ? c.ports.find((p) => p.containerPort === port) : c.ports.find((p) => p.name === port))?.containerPort;

  before(async () => {
    const kustomization = parse(await readFile(path.join(KUBERNETES, 'kustomization.yaml'), 'utf8')) as {
      resources: string[];
      secretGenerator?: { name: string; files: string[] }[];
    };
    resources = [];
    for (const file of kustomization.resources) {
      for (const doc of parseAllDocuments(await readFile(path.join(KUBERNETES, file), 'utf8'), { version: '1.1' })) {
        assert.deepEqual(doc.errors, [], file);
        resources.push(doc.toJS() as Manifest);
      }
    }
    generated = (kustomization.secretGenerator ?? []).map((g) => ({ name: g.name, keys: g.files.map((f) => f.split('=')[0]!) }));
    const deployments = byKind('Deployment');
    assert.equal(deployments.length, 1);
    deployment = deployments[0] as typeof deployment;
    pod = deployment.spec.template.spec;
    image = await imageEnv();
  });

  it('runs two replicas or more, selected by the labels its pods carry', () => {
    assert.ok(deployment.spec.replicas >= 2, `replicas: ${deployment.spec.replicas}`);
    assert.ok(matches(deployment.spec.selector.matchLabels, deployment.spec.template.metadata.labels), 'the Deployment selects its own pods');
  });

  it('passes every container only variables regcache (or the AWS SDK) reads, with values it accepts and WORKERS=1', async () => {
    const known = regcacheVariables();
    for (const c of pod.containers) {
      const env: Record<string, string> = { ...image };
      for (const from of c.envFrom ?? []) {
        const source = from.configMapRef
          ? byKind('ConfigMap').find((m) => m.metadata.name === from.configMapRef!.name)
          : byKind('Secret').find((s) => s.metadata.name === from.secretRef?.name);
        assert.ok(source, `envFrom ${JSON.stringify(from)} names a resource of these manifests`);
        const data = { ...(source.data as Record<string, string>), ...(source.stringData as Record<string, string>) };
        assert.deepEqual(unknownVariables(Object.keys(data), known), [], `${source.kind} ${source.metadata.name}`);
        Object.assign(env, data);
      }
      assert.deepEqual(
        unknownVariables(
          (c.env ?? []).map((e) => e.name),
          known,
        ),
        [],
        `container ${c.name}`,
      );
      for (const e of c.env ?? []) env[e.name] = e.value ?? 'from-a-secret';
      const config = loadConfig(env);
      assert.ok(config.cacheStore, 'CACHE_STORE is set: the replicas share a bucket');
      assert.equal(config.workers, 1);
      assert.equal(config.caDir, image.CA_DIR);
      assert.equal(config.cacheDir, image.CACHE_DIR);
    }
  });

  it('probes /healthz (liveness) and /readyz (readiness) on the port regcache answers them on', () => {
    for (const c of pod.containers) {
      assert.equal(c.livenessProbe?.httpGet.path, '/healthz');
      assert.equal(c.readinessProbe?.httpGet.path, '/readyz');
      for (const probe of [c.livenessProbe, c.readinessProbe, c.startupProbe]) {
        if (probe) assert.equal(containerPort(c, probe.httpGet.port), Number(image.PORT), `${probe.httpGet.path} on PORT`);
      }
      assert.deepEqual(c.ports.map((p) => p.containerPort).sort(), [Number(image.PORT), Number(image.MIRROR_PORT)].sort());
    }
  });

  it('has a Service whose selector finds the pods and whose ports reach the proxy and the mirror', () => {
    const [service, ...more] = byKind('Service') as (Manifest & {
      spec: { selector: Record<string, string>; ports: { port: number; targetPort: string | number }[] };
    })[];
    assert.ok(service && more.length === 0, 'one Service');
    assert.ok(matches(service.spec.selector, deployment.spec.template.metadata.labels), `Service selector ${JSON.stringify(service.spec.selector)}`);
    const targets = service.spec.ports.map((p) => containerPort(pod.containers[0]!, p.targetPort));
    assert.deepEqual(targets.sort(), [Number(image.PORT), Number(image.MIRROR_PORT)].sort());
  });

  it('has a PodDisruptionBudget over the same pods', () => {
    const [pdb] = byKind('PodDisruptionBudget') as (Manifest & {
      spec: { selector: { matchLabels: Record<string, string> }; maxUnavailable?: number; minAvailable?: number };
    })[];
    assert.ok(pdb, 'a PodDisruptionBudget');
    assert.ok(
      matches(pdb.spec.selector.matchLabels, deployment.spec.template.metadata.labels),
      `PDB selector ${JSON.stringify(pdb.spec.selector.matchLabels)}`,
    );
    assert.deepEqual(pdb.spec.selector.matchLabels, deployment.spec.selector.matchLabels);
    assert.ok((pdb.spec.maxUnavailable ?? 0) < deployment.spec.replicas, 'the PDB keeps a replica up');
  });

  it('runs as uid 1000 on a read-only root, writing only CACHE_DIR, an emptyDir; the CA is a Secret at CA_DIR', () => {
    assert.equal(pod.securityContext?.runAsUser, 1000);
    assert.equal(pod.securityContext?.runAsNonRoot, true);
    for (const c of pod.containers) {
      assert.equal(c.securityContext?.runAsUser ?? pod.securityContext?.runAsUser, 1000);
      assert.equal(c.securityContext?.readOnlyRootFilesystem, true);
      assert.equal(c.securityContext?.allowPrivilegeEscalation, false);
      const volumeAt = (dir: string) => pod.volumes.find((v) => v.name === c.volumeMounts.find((m) => m.mountPath === dir)?.name);
      assert.ok(volumeAt(image.CACHE_DIR!)?.emptyDir !== undefined, 'CACHE_DIR (control socket, spool files) is an emptyDir');
      const ca = volumeAt(image.CA_DIR!);
      assert.ok(ca?.secret, 'CA_DIR is a Secret');
      assert.equal(ca.secret.defaultMode, 0o440, 'the key readable by the group, not by everyone');
      assert.equal(pod.securityContext?.fsGroup, 1000, 'the group uid 1000 is in');
      assert.equal(c.volumeMounts.find((m) => m.mountPath === image.CA_DIR)?.readOnly, true);
    }
  });

  it('references only Secrets and keys these manifests define, the CA with both of its files', () => {
    const secretKeys = (name: string): string[] | undefined => {
      const secret = byKind('Secret').find((s) => s.metadata.name === name);
      if (secret) return Object.keys({ ...(secret.data as object), ...(secret.stringData as object) });
      return generated.find((g) => g.name === name)?.keys;
    };
    for (const c of pod.containers) {
      for (const e of c.env ?? []) {
        const ref = e.valueFrom?.secretKeyRef;
        if (ref) assert.ok(secretKeys(ref.name)?.includes(ref.key), `${e.name}: Secret ${ref.name} has no key ${ref.key}`);
      }
    }
    const ca = pod.volumes.find((v) => v.secret)!.secret!;
    const keys = secretKeys(ca.secretName);
    assert.ok(keys, `Secret ${ca.secretName} is defined (or generated)`);
    // What loadOrCreateCa reads in CA_DIR.
    assert.deepEqual([...keys].sort(), ['ca.crt', 'ca.key']);
    for (const item of ca.items ?? []) assert.ok(keys.includes(item.key), `item ${item.key}`);
  });

  it('gives a pod the time to stop serving: preStop, then the drain regcache does on SIGTERM', () => {
    const preStop = pod.containers[0]!.lifecycle?.preStop?.exec?.command;
    assert.equal(preStop?.[0], 'sleep');
    const needed = Number(preStop[1]) + SHUTDOWN_GRACE_MS / 1000;
    assert.ok((pod.terminationGracePeriodSeconds ?? 30) > needed, `terminationGracePeriodSeconds ${pod.terminationGracePeriodSeconds} covers ${needed} s`);
  });
});

describe('deploy/make-ca.sh', () => {
  const tmp = new TmpDirs();
  after(() => tmp.cleanup());

  it('makes a CA regcache loads as its own, and never replaces one', async () => {
    const dir = path.join(await tmp.make('regcache-make-ca'), 'ca');
    const script = path.join(ROOT, 'deploy', 'make-ca.sh');
    const made = await run('sh', [script, dir], { env: { PATH: BASE_PATH } });
    assert.equal(made.code, 0, made.stderr);
    assert.equal((await stat(path.join(dir, 'ca.key'))).mode & 0o777, 0o600);
    const { ca, created } = await loadOrCreateCa(dir);
    assert.equal(created, false, 'loaded, not replaced');
    assert.match(ca.certPem, /BEGIN CERTIFICATE/);
    const again = await run('sh', [script, dir], { env: { PATH: BASE_PATH } });
    assert.equal(again.code, 1);
    assert.match(again.stderr, /already holds/);
    assert.equal((await loadOrCreateCa(dir)).ca.certPem, ca.certPem);
  });
});
