// The fleet's deploy files (deploy/, docs/scale-out.md "Deploying a fleet"): the Compose files as Debian's
// docker-compose (v1) reads them and haproxy's configuration as haproxy checks it, held against what
// regcache reads and listens on. No Docker Hub: what can be checked without it.
import assert from 'node:assert/strict';
import { copyFile, readFile, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { parse } from 'yaml';
import { loadConfig, type Env } from '../src/config.js';
import { BASE_PATH } from './harness/containerd.js';
import { run } from './harness/proc.js';
import { TmpDirs } from './harness/tmp.js';

const ROOT = path.resolve(import.meta.dirname, '..');
const COMPOSE = path.join(ROOT, 'deploy', 'compose');

// The AWS SDK's own variables (credentials and region chain), which regcache passes to it unread.
const SDK_VARIABLES = ['AWS_ACCESS_KEY_ID', 'AWS_SECRET_ACCESS_KEY', 'AWS_SESSION_TOKEN', 'AWS_REGION', 'AWS_PROFILE', 'AWS_ROLE_ARN', 'AWS_WEB_IDENTITY_TOKEN_FILE'];

/** Every variable src/config.ts reads: get('NAME') and env.NAME. A name not in it is a typo. */
async function regcacheVariables(): Promise<Set<string>> {
  const source = await readFile(path.join(ROOT, 'src', 'config.ts'), 'utf8');
  const names = [...source.matchAll(/\bget\('([A-Za-z0-9_]+)'\)|\benv\.([A-Z0-9_]+)/g)].map((m) => m[1] ?? m[2]!);
  assert.ok(names.includes('CACHE_STORE') && names.includes('S3_ENDPOINT') && names.includes('AUTH_REGISTRIES_DELIMITER'), 'config.ts still reads its variables as get(NAME) and env.NAME');
  return new Set([...names, ...SDK_VARIABLES]);
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
    run('docker-compose', ['--project-directory', project, ...files.flatMap((f) => ['-f', path.join(project, f)]), ...args], { env: { PATH: BASE_PATH, HOME: project, ...env }, cwd: project });
  const FLEET = 'docker-compose.fleet.yaml';
  const MINIO = 'docker-compose.minio.yaml';

  before(async () => {
    project = await tmp.make('regcache-fleet-compose');
    for (const f of [FLEET, MINIO, 'haproxy.cfg', '.env.example']) await copyFile(path.join(COMPOSE, f), path.join(project, f));
    known = await regcacheVariables();
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
    assert.ok(regcache.volumes?.some((v) => /^ca:\/ca(:rw)?$/.test(v)), `the CA volume is shared: ${regcache.volumes?.join(' ')}`);
    assert.ok(regcache.volumes?.some((v) => v === image.CACHE_DIR), 'CACHE_DIR on an anonymous volume of its own');
    assert.ok('ca' in config.volumes, 'the CA volume is a named volume');
    assert.deepEqual(regcache.depends_on, { bucket: { condition: 'service_completed_successfully' } }, 'replicas start once the bucket exists');
    for (const name of ['PORT', 'MIRROR_PORT', 'CA_DIR', 'CACHE_DIR']) assert.equal(regcache.environment?.[name], undefined, `${name} stays the image's`);
    assert.deepEqual(unknownVariables(Object.keys(regcache.environment ?? {}), known), [], 'every variable the replicas get is one regcache (or the AWS SDK) reads');
    const settings = loadConfig(regcache.environment as Env);
    assert.equal(settings.cacheStore?.bucket, 'regcache');
    assert.equal(settings.workers, 1);

    assert.deepEqual(balancer.ports?.map((p) => p.target).sort(), [Number(image.PORT), Number(image.MIRROR_PORT)].sort(), 'the balancer publishes the proxy and mirror ports');
    assert.ok(balancer.volumes?.some((v) => v.endsWith('/haproxy.cfg:/usr/local/etc/haproxy/haproxy.cfg:ro')), `haproxy.cfg mounted: ${balancer.volumes?.join(' ')}`);
    assert.equal(minio.environment?.MINIO_ROOT_USER, regcache.environment?.AWS_ACCESS_KEY_ID, "MinIO's user is the replicas'");
    assert.equal(bucket.environment?.CACHE_STORE, regcache.environment?.CACHE_STORE, 'the one-shot creates the bucket the replicas use');
  });

  it('alone, on an S3 endpoint .env names: no MinIO', async () => {
    const example = await readFile(path.join(COMPOSE, '.env.example'), 'utf8');
    await writeFile(path.join(project, '.env'), example.replace(/^S3_ENDPOINT=.*$/m, 'S3_ENDPOINT=https://rgw.example.internal').replace(/^S3_FORCE_PATH_STYLE=.*$/m, 'S3_FORCE_PATH_STYLE=false'));
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
    const servers = [...cfg.matchAll(/^\s*server-template \S+ \S+ regcache:(\d+) check(?: port (\d+))?$/gm)].map((m) => ({ port: m[1], checkPort: m[2] ?? m[1] }));
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
