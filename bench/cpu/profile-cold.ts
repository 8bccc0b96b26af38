// Profiles one cold (MISS) fetch of a big blob through regcache with perf (docs/decisions.md #71's method):
// a docker-registry over TLS, regcache run with --perf-basic-prof, `perf record -g` of its process while
// curl fetches the blob once, then `perf script` to PROFILE_OUT (default /tmp/regcache-cold.perf.txt).
// PROFILE_MB (256), PROFILE_CLI (this tree's dist/cli.js), PROFILE_PATH (cold | warm).
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { spawn } from 'node:child_process';
import { run } from '../../test/harness/proc.js';
import { startRegcache } from '../../test/harness/regcache.js';
import { startBlobRegistry } from '../blob-registry.js';
import { cpuSeconds } from '../measure.js';

const HOST = 'registry.bench';
const REPO = 'bench/profile';
const here = path.dirname(fileURLToPath(import.meta.url));
const mb = Number(process.env.PROFILE_MB ?? 256);
const cli = process.env.PROFILE_CLI ?? path.resolve(here, '../../dist/cli.js');
const out = process.env.PROFILE_OUT ?? '/tmp/regcache-cold.perf.txt';
const which = process.env.PROFILE_PATH ?? 'cold';

const root = await mkdtemp(path.join(os.tmpdir(), 'regcache-profile-'));
const { registry, blob, regcacheEnv } = await startBlobRegistry(root, { host: HOST, repo: REPO, mb, name: 'profile' });
const rc = await startRegcache({
  dir: path.join(root, 'rc'),
  cacheDir: path.join(root, 'rc', 'cache'),
  caDir: path.join(root, 'rc-ca'),
  cli,
  env: { ...regcacheEnv, NODE_OPTIONS: '--perf-basic-prof' },
});
const url = `https://${HOST}/v2/${REPO}/blobs/${blob.digest}`;
const curl = () =>
  run(
    'curl',
    [
      '-sS',
      '--http1.1',
      '-o',
      '/dev/null',
      '-w',
      '%{http_code} %{size_download} %{time_total}',
      '--cacert',
      path.join(root, 'rc-ca', 'ca.crt'),
      '--proxy',
      rc.proxyUrl,
      url,
    ],
    {
      env: { PATH: process.env.PATH ?? '' },
      timeoutMs: 600_000,
    },
  );
try {
  console.log('prime', (await curl()).stdout); // JIT and first-use costs out of the profile
  if (which === 'cold') {
    const rm = await run(process.execPath, [cli, 'cache', 'rm', blob.digest, '--cache-dir', rc.cacheDir], { env: { PATH: process.env.PATH ?? '' } });
    if (rm.code !== 0) throw new Error(`cache rm: ${rm.stderr}`);
  }
  const data = path.join(root, 'perf.data');
  // PROFILE_STRACE=1: syscall counts (strace -c) instead of a profile
  const strace = process.env.PROFILE_STRACE === '1';
  const perf = strace
    ? spawn('strace', ['-f', '-c', '-o', out, '-p', String(rc.daemon.pid)], { stdio: 'inherit' })
    : spawn('perf', ['record', '-F', '999', '-g', '-p', String(rc.daemon.pid), '-o', data], { stdio: 'inherit' });
  await new Promise((r) => setTimeout(r, 1000));
  const cpu0 = await cpuSeconds(rc.daemon.pid);
  const r = await curl();
  await new Promise((r) => setTimeout(r, 1500)); // the fill's sync and commit
  const cpu1 = await cpuSeconds(rc.daemon.pid);
  perf.kill('SIGINT');
  await new Promise((r) => perf.once('exit', r));
  console.log('curl', r.stdout, r.stderr, 'ns/B', (((cpu1 ?? 0) - (cpu0 ?? 0)) * 1e9) / blob.size);
  if (!strace) await run('sh', ['-c', `perf script -i ${data} > ${out} 2>/dev/null`], { timeoutMs: 600_000 });
} finally {
  await rc.stop();
  await registry.stop();
  await rm(root, { recursive: true, force: true });
}
