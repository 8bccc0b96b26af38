// How long `npm start` takes to a healthy regcache when dist/ is already built, beside the previous scripts
// (a full `tsc -p` before every start) and beside `node dist/cli.js serve` itself (the floor), in one run,
// rounds interleaved. Each variant runs in its own copy of the package (package.json with that variant's
// scripts, tsconfig.json, src/, node_modules linked), built once beforehand; one CA shared by all (no key
// generation in the measure). Time: from spawn to the first 200 from /healthz. Each start is stopped by
// SIGTERM to its process group. Run: node --import tsx bench/start-bench.ts [BENCH_START_RUNS=5]
import { spawn } from 'node:child_process';
import { cp, readFile, symlink, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { freePort } from '../test/harness/ports.js';
import { run, sleep } from '../test/harness/proc.js';
import { TmpDirs } from '../test/harness/tmp.js';
import { envInt, median } from './measure.js';

const ROOT = path.resolve(import.meta.dirname, '..');

interface Variant {
  name: string;
  command: string[];
  scripts?: Record<string, string>; // package.json scripts of this variant (default: this checkout's)
}

const VARIANTS: Variant[] = [
  { name: 'npm start (this checkout: tsc -b, exec node)', command: ['npm', 'start'] },
  {
    name: 'npm start (previous scripts: tsc -p every start)',
    command: ['npm', 'start'],
    scripts: { build: 'tsc -p tsconfig.json', prestart: 'npm run build', start: 'node dist/cli.js serve' },
  },
  { name: 'node dist/cli.js serve (floor)', command: ['node', 'dist/cli.js', 'serve'] },
];

async function healthy(port: number, child: ReturnType<typeof spawn>): Promise<void> {
  for (;;) {
    if (child.exitCode !== null) throw new Error(`exited with ${child.exitCode}`);
    const ok = await fetch(`http://127.0.0.1:${port}/healthz`).then(
      (r) => r.ok,
      () => false,
    );
    if (ok) return;
    await sleep(20);
  }
}

async function main(): Promise<void> {
  const runs = envInt('BENCH_START_RUNS', 5);
  const tmp = new TmpDirs();
  const dir = await tmp.make('regcache-start-bench');
  const caDir = path.join(dir, 'ca');
  const packages: string[] = [];
  for (const [i, variant] of VARIANTS.entries()) {
    const pkg = path.join(dir, `pkg-${i}`);
    for (const item of ['package.json', 'tsconfig.json', 'src']) await cp(path.join(ROOT, item), path.join(pkg, item), { recursive: true });
    await symlink(path.join(ROOT, 'node_modules'), path.join(pkg, 'node_modules'));
    if (variant.scripts) {
      const json = JSON.parse(await readFile(path.join(pkg, 'package.json'), 'utf8')) as { scripts: Record<string, string> };
      Object.assign(json.scripts, variant.scripts);
      await writeFile(path.join(pkg, 'package.json'), JSON.stringify(json, null, 2));
    }
    const built = await run('npx', ['tsc', '-b', 'tsconfig.json'], { cwd: pkg, timeoutMs: 600_000 });
    if (built.code !== 0) throw new Error(`build of ${pkg}: ${built.stdout}${built.stderr}`);
    packages.push(pkg);
  }
  const times: number[][] = VARIANTS.map(() => []);
  for (let round = 0; round < runs + 1; round++) {
    for (const [i, variant] of VARIANTS.entries()) {
      const port = await freePort();
      const started = performance.now();
      const child = spawn(variant.command[0]!, variant.command.slice(1), {
        cwd: packages[i],
        detached: true, // its own process group: the previous scripts leave regcache behind a SIGTERM to npm
        stdio: 'ignore',
        env: {
          ...process.env,
          PORT: String(port),
          MIRROR_PORT: '0',
          CA_DIR: caDir,
          CACHE_DIR: path.join(dir, `cache-${i}-${round}`),
          npm_config_update_notifier: 'false',
        },
      });
      await healthy(port, child);
      const ms = performance.now() - started;
      if (round > 0) times[i]!.push(ms); // round 0 warms the page cache (and makes the CA)
      process.kill(-child.pid!, 'SIGTERM');
      await new Promise((resolve) => child.once('exit', resolve));
      await sleep(500); // the workers' drain
    }
  }
  const floor = median(times[2]!);
  console.log(`time from spawn to a 200 from /healthz, median of ${runs} (dist/ built, WORKERS default, one shared CA):`);
  for (const [i, variant] of VARIANTS.entries()) {
    const m = median(times[i]!);
    console.log(
      `  ${variant.name.padEnd(52)} ${(m / 1000).toFixed(2)} s  ${(m / floor).toFixed(2)}x the floor  [${times[i]!.map((t) => (t / 1000).toFixed(2)).join(' ')}]`,
    );
  }
  console.log(`  this checkout's npm start vs the previous scripts: ${(median(times[0]!) / median(times[1]!)).toFixed(2)}x the time`);
  await tmp.cleanup();
}

await main();
