// The test runner behind `npm test` and `npm run test:unit` (test/README.md).
//
// Every test/*.test.ts says its tier in a header comment near its top:
//   // tier: unit   in process: no daemon, no system package, no build (tsx runs the sources); seconds
//   // tier: e2e    real processes: dist/ built, daemons, clients, system packages (test/install-deps.sh)
// and a file that needs the machine to itself also says `// exclusive: alone`, or `// exclusive: alone once set
// up` when only part of it does: it starts as the pool hands out its last file, sets up beside the files still
// running, and calls machineToItself() (machine-to-itself.ts) before that part. A file with no tier stops the
// run before anything starts, so nothing is left out unnoticed.
//
//   --unit          the unit tier only, no checks (what a developer runs every few minutes)
//   --jobs N        how many files run side by side (default: unit 3, whole suite REGCACHE_TEST_JOBS or one
//                   more than the CPUs)
//   --verbose       with --unit: every file's spec output (by default only a failed file's)
//   --list          print each file's tier and stop
//   FILE...         just these files (each still run as its tier needs: e2e files after the build)
//
// The whole suite: the checks (typecheck + lint on one program, imports, format) and every non-exclusive
// file in one pool of N slots, longest first, the build beside them (the e2e files wait for it, and run
// from bundles made meanwhile: bundle-tests.ts); then the exclusive files one at a time (the first one's
// set-up beside the pool's last files when its header allows). Each file runs as
// its own process group with a band of ports of its own (ports.ts), its output held and printed whole
// when it ends. The summary counts tests, lists every skip with its reason and fails the
// run on a failure, a file that ran no test, a time-out, or (as root) a skip saying it needs root.
import { spawn } from 'node:child_process';
import { mkdirSync, readFileSync, readdirSync, writeFileSync } from 'node:fs';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import type { TestOutcome, TestProgress } from './test-events.js';
import { errorMessage } from '../../src/telemetry/error-message.js';
import { CA_TEMPLATE_ENV } from './ca-template.js';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const EVENTS_REPORTER_FILE = 'test/harness/test-events.ts';
export const EVENTS_REPORTER = `./${EVENTS_REPORTER_FILE}`;
/** Where the e2e files' bundles go (bundle-tests.ts), outside the tree like any cache. */
const BUNDLES_DIR = path.join(ROOT, 'node_modules/.cache/regcache-tests/bundles');
/** Each e2e file's bundle (and the events reporter's) once made, by file; a file without one runs under tsx. */
let bundles = new Map<string, string>();
/** Where the last run's durations are kept to order the next one (outside the tree, like any cache). */
const DURATIONS_FILE = path.join(ROOT, 'node_modules/.cache/regcache-tests/durations.json');
/** Bands of ports for running files, one per slot, below the kernel's ephemeral range (32768-60999). */
const PORT_BAND_BASE = 20_000;
const PORT_BAND_SIZE = 1000;
const MAX_JOBS = 11; // and one band more, for an exclusive file setting up beside the pool: all below 32768

/**
 * Seconds a file took in the whole suite (measured 2026-12-05 with 4 slots on the 2-core machine while other
 * work loaded it: only their order matters), to start the long ones first when no earlier run's durations
 * are at hand (a clean clone in CI). Only the order depends on these. The checks' are rough guesses (they
 * share the pool; a run records what they took).
 */
const KNOWN_SECONDS: Record<string, number> = {
  'test/image.test.ts': 765,
  'typecheck + lint': 120,
  'check:imports': 20,
  format: 15,
  'test/npm-start.test.ts': 194,
  'test/cache-store.test.ts': 139,
  'test/s3-fleet.test.ts': 121,
  'test/ring-send.test.ts': 121,
  'test/cli.test.ts': 104,
  'test/e2e-skopeo.test.ts': 96,
  'test/workers.test.ts': 88,
  'test/auth-doors.test.ts': 82,
  'test/s3-bound.test.ts': 82,
  'test/status-figures.test.ts': 79,
  'test/store-integrity.test.ts': 68,
  'test/cache-cli.test.ts': 68,
  'test/mirror.test.ts': 67,
  'test/proxy-cache.test.ts': 59,
};

type Tier = 'unit' | 'e2e';

interface TestFile {
  file: string; // relative to ROOT
  tier: Tier;
  exclusive: boolean;
  /** Exclusive once set up: may start beside the pool's last files (`// exclusive: alone once set up`). */
  setsUpBeside: boolean;
}

export interface Job {
  name: string;
  kind: 'check' | Tier;
  command: string[];
  timeoutMs: number;
  /** A test file (command: the file): run directly by node with tsx, reporting its tests; a check reports only an exit code. */
  testFile: boolean;
}

interface JobResult {
  job: Job;
  code: number | string;
  seconds: number;
  cpuSeconds: number | null; // the job's processes' CPU (user + system), where /proc tells it
  timedOut: boolean;
  outcomes: TestOutcome[];
  running: string[]; // tests (and suites) started and not ended when it stopped: where a time-out was stuck
  output: string;
}

function parseArgs(argv: string[]): { unit: boolean; verbose: boolean; list: boolean; jobs: number | null; files: string[] } {
  let unit = false;
  let list = false;
  let verbose = false;
  let jobs: number | null = null;
  const files: string[] = [];
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i]!;
    if (arg === '--unit') unit = true;
    else if (arg === '--verbose') verbose = true;
    else if (arg === '--list') list = true;
    else if (arg === '--jobs') jobs = Number(argv[++i]);
    else if (arg.startsWith('--jobs=')) jobs = Number(arg.slice('--jobs='.length));
    else if (arg.startsWith('-')) throw new Error(`unknown option ${arg}`);
    else files.push(path.relative(ROOT, path.resolve(arg)));
  }
  if (jobs !== null && !(Number.isInteger(jobs) && jobs >= 1 && jobs <= MAX_JOBS)) throw new Error(`--jobs takes 1 to ${MAX_JOBS}`);
  return { unit, verbose, list, jobs, files };
}

/** The tier and exclusivity a file declares in the comments at its top. */
export function readHeader(text: string): { tier: Tier | null; exclusive: boolean; setsUpBeside: boolean } {
  let tier: Tier | null = null;
  let exclusive = false;
  let setsUpBeside = false;
  for (const line of text.split('\n')) {
    if (!line.startsWith('//')) break;
    const m = /^\/\/\s*tier:\s*(\S+)/.exec(line);
    if (m !== null) tier = m[1] === 'unit' || m[1] === 'e2e' ? m[1] : null;
    if (/^\/\/\s*exclusive:\s*alone\b/.test(line)) exclusive = true;
    if (/^\/\/\s*exclusive:\s*alone once set up\b/.test(line)) setsUpBeside = true;
  }
  return { tier, exclusive, setsUpBeside };
}

function discover(): { files: TestFile[]; untiered: string[] } {
  const files: TestFile[] = [];
  const untiered: string[] = [];
  for (const name of readdirSync(path.join(ROOT, 'test')).sort()) {
    if (!name.endsWith('.test.ts')) continue;
    const file = `test/${name}`;
    const { tier, exclusive, setsUpBeside } = readHeader(readFileSync(path.join(ROOT, file), 'utf8'));
    if (tier === null) untiered.push(file);
    else files.push({ file, tier, exclusive, setsUpBeside });
  }
  return { files, untiered };
}

function readDurations(): Record<string, number> {
  try {
    return JSON.parse(readFileSync(DURATIONS_FILE, 'utf8')) as Record<string, number>;
  } catch {
    return {};
  }
}

function writeDurations(previous: Record<string, number>, results: JobResult[]): void {
  const next = { ...previous };
  // Test files and the checks (they share the pool); not unit groups, whose make-up changes.
  for (const r of results) if (!r.timedOut && (r.job.name.startsWith('test/') || r.job.kind === 'check')) next[r.job.name] = Math.round(r.seconds * 10) / 10;
  try {
    mkdirSync(path.dirname(DURATIONS_FILE), { recursive: true });
    writeFileSync(DURATIONS_FILE, JSON.stringify(next, null, 2) + '\n');
  } catch {
    // only the next run's order depends on it
  }
}

function testJob(f: TestFile): Job {
  return {
    name: f.file,
    kind: f.tier,
    command: [f.file],
    // Far above what any file takes: a file that hangs ends the run with its name instead of CI's timeout.
    timeoutMs: f.tier === 'unit' ? 120_000 : f.exclusive ? 1_800_000 : 900_000,
    testFile: true,
  };
}

/**
 * The unit tier as `slots` processes, each running a share of the files one after another
 * (unit-group.ts), shares balanced by the files' expected durations: starting node and tsx costs more CPU
 * than most unit files take.
 */
function unitGroups(files: TestFile[], slots: number, estimate: (f: TestFile) => number): Job[] {
  const groups = Array.from({ length: Math.min(slots, files.length) }, () => ({ files: [] as string[], seconds: 0 }));
  for (const f of [...files].sort((a, b) => estimate(b) - estimate(a))) {
    const lightest = groups.reduce((a, b) => (b.seconds < a.seconds ? b : a));
    lightest.files.push(f.file);
    lightest.seconds += estimate(f);
  }
  return groups.map((g, i) => ({
    name: `unit group ${i + 1} (${g.files.length} files)`,
    kind: 'unit' as const,
    command: ['test/harness/unit-group.ts', ...g.files],
    timeoutMs: 300_000,
    testFile: true,
  }));
}

function checkJobs(): Job[] {
  const bin = (name: string): string => path.join(ROOT, 'node_modules/.bin', name);
  return [
    // The build has type-checked src/ for itself; this checks the tests, bench/ and scripts/ with it
    // (test/tsconfig.json) and lints them all, on one program: `npm run typecheck` and `npm run lint` at once.
    {
      name: 'typecheck + lint',
      kind: 'check',
      command: [process.execPath, '--import', 'tsx', 'scripts/types-and-lint.ts'],
      timeoutMs: 600_000,
      testFile: false,
    },
    // Imports point downward only (.dependency-cruiser.cjs).
    { name: 'check:imports', kind: 'check', command: ['npm', 'run', '--silent', 'check:imports'], timeoutMs: 300_000, testFile: false },
    { name: 'format', kind: 'check', command: [bin('prettier'), '--check', '--log-level', 'warn', '.'], timeoutMs: 300_000, testFile: false },
  ];
}

/**
 * CPU seconds (user + system) of this process's children that have exited and were reaped, as Linux counts
 * them in /proc/self/stat (cutime, cstime: a child's own and its reaped descendants'); null without /proc.
 * Read when a job's process closes, the difference from the last reading is that job's CPU: the suite is
 * CPU-bound on a small machine, so this, not wall time under contention, says which file costs the run
 * most. Two jobs ending in the same instant may have their sums swapped between them.
 */
export function childrenCpuSeconds(): number | null {
  try {
    const stat = readFileSync('/proc/self/stat', 'utf8');
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' '); // the name in parentheses may hold spaces
    // Fields 16 and 17 of proc(5) (cutime, cstime), counted from the state (field 3), in USER_HZ (100 on Linux).
    return (Number(fields[13]) + Number(fields[14])) / 100;
  } catch {
    return null; // not Linux: no CPU column
  }
}
let childrenCpuRead = childrenCpuSeconds();

/** Bundles the e2e files and the events reporter; on a failure says so, and they run under tsx. */
async function makeBundles(files: string[]): Promise<void> {
  try {
    const { bundleTests } = await import('./bundle-tests.js'); // esbuild: only for a run with e2e files
    await rm(BUNDLES_DIR, { recursive: true, force: true });
    bundles = await bundleTests([...files, EVENTS_REPORTER_FILE], BUNDLES_DIR);
  } catch (err) {
    process.stdout.write(`── bundling the e2e files failed, they run under tsx: ${errorMessage(err)}\n`);
  }
}

/** Runs one job as its own process group; its output is held and returned whole. */
async function runJob(job: Job, slot: number, eventsFile: string | null, moreEnv: Record<string, string> = {}): Promise<JobResult> {
  const started = performance.now();
  const low = PORT_BAND_BASE + slot * PORT_BAND_SIZE;
  const env = { ...process.env, REGCACHE_TEST_PORTS: `${low}-${low + PORT_BAND_SIZE}`, REGCACHE_TEST_TIER: job.kind, ...moreEnv };
  // A test file runs directly (no --test: one process, not a runner and a child), with the spec reporter for
  // people and test-events.ts for the summary; an e2e file from its bundle (bundle-tests.ts) when there is one.
  const reporter = bundles.get(EVENTS_REPORTER_FILE);
  const bundle = reporter === undefined ? undefined : bundles.get(job.name);
  const [command, ...args] =
    eventsFile === null
      ? job.command
      : [
          process.execPath,
          ...(bundle !== undefined ? ['--enable-source-maps'] : ['--import', 'tsx']),
          '--test-reporter=spec',
          '--test-reporter-destination=stdout',
          `--test-reporter=${bundle !== undefined ? reporter : EVENTS_REPORTER}`,
          `--test-reporter-destination=${eventsFile}`,
          ...(bundle !== undefined ? [bundle] : job.command),
        ];
  const child = spawn(command!, args, { cwd: ROOT, env, stdio: ['ignore', 'pipe', 'pipe'], detached: true });
  const chunks: Buffer[] = [];
  child.stdout.on('data', (b: Buffer) => chunks.push(b));
  child.stderr.on('data', (b: Buffer) => chunks.push(b));
  let timedOut = false;
  const killGroup = (signal: NodeJS.Signals): void => {
    try {
      process.kill(-child.pid!, signal);
    } catch {
      // the group is gone
    }
  };
  const timer = setTimeout(() => {
    timedOut = true;
    killGroup('SIGTERM');
    setTimeout(() => killGroup('SIGKILL'), 10_000).unref();
  }, job.timeoutMs);
  const code = await new Promise<number | string>((resolve) => {
    child.once('error', () => resolve(127));
    child.once('close', (c, signal) => resolve(c ?? signal ?? 'unknown'));
  });
  clearTimeout(timer);
  const cpuNow = childrenCpuSeconds();
  const cpuSeconds = cpuNow === null || childrenCpuRead === null ? null : cpuNow - childrenCpuRead;
  childrenCpuRead = cpuNow;
  // Daemons a file left behind (its exit hooks did not run) go with its group.
  killGroup('SIGKILL');
  const events = (eventsFile === null ? '' : await readFile(eventsFile, 'utf8').catch(() => ''))
    .split('\n')
    .filter((l) => l.startsWith('{'))
    .map((l) => JSON.parse(l) as TestOutcome | TestProgress);
  for (const e of events) if (bundle !== undefined && e.file === bundle) e.file = path.join(ROOT, job.name); // named by its source
  const outcomes = events.filter((e): e is TestOutcome => 'outcome' in e);
  return {
    job,
    code,
    seconds: (performance.now() - started) / 1000,
    cpuSeconds,
    timedOut,
    outcomes,
    running: stillRunning(events.filter((e): e is TestProgress => 'progress' in e)),
    output: Buffer.concat(chunks).toString('utf8'),
  };
}

/** What was still running, outermost first ("file: suite > test"), from the start and end lines in order. */
export function stillRunning(progress: TestProgress[]): string[] {
  const open: TestProgress[] = [];
  for (const p of progress) {
    if (p.progress === 'start') open.push(p);
    else {
      const i = open.map((o) => o.name === p.name && o.file === p.file).lastIndexOf(true);
      if (i >= 0) open.splice(i, 1);
    }
  }
  const byFile = new Map<string, string[]>();
  for (const o of open) byFile.set(o.file ?? '', [...(byFile.get(o.file ?? '') ?? []), o.name]);
  return [...byFile].map(([file, names]) => `${file ? `${path.relative(ROOT, file)}: ` : ''}${names.join(' > ')}`);
}

/** Why a finished job fails the run, or null. */
function failure(r: JobResult): string | null {
  if (r.timedOut) return `timed out after ${r.job.timeoutMs / 1000} s${r.running.length ? `, still running ${r.running.join('; ')}` : ''}`;
  if (r.code !== 0) return `exit ${r.code}`;
  if (r.job.testFile && r.outcomes.length === 0) return 'ran no test';
  if (r.outcomes.some((o) => o.outcome === 'fail')) return 'a test failed';
  if (process.getuid?.() === 0) {
    const rootSkips = r.outcomes.filter((o) => o.outcome === 'skip' && /\bneeds? root\b/i.test(o.reason));
    if (rootSkips.length > 0) return `${rootSkips.length} root-only check(s) skipped though running as root`;
  }
  return null;
}

/** Whether a passing test file's spec output is printed (the unit tier shows only failures unless --verbose). */
let showPassingOutput = true;

function report(r: JobResult): void {
  const why = failure(r);
  const counts = r.job.testFile ? ` (${tally(r.outcomes)})` : '';
  const cpu = r.cpuSeconds === null ? '' : ` (${r.cpuSeconds.toFixed(1)} s CPU)`;
  const head = `── ${r.job.name} [${r.job.kind}] ${r.seconds.toFixed(1)} s${cpu}: ${why === null ? 'ok' : `FAILED, ${why}`}${counts}`;
  // Checks that pass have nothing to say; test files show their spec output (diagnostics: timings, tables).
  const body = why === null && (!r.job.testFile || !showPassingOutput) ? '' : r.output.trimEnd();
  process.stdout.write(`${head}\n${body === '' ? '' : body + '\n'}`);
}

function tally(outcomes: TestOutcome[]): string {
  const n = (o: TestOutcome['outcome']): number => outcomes.filter((x) => x.outcome === o).length;
  return `${n('pass')} passed, ${n('fail')} failed, ${n('skip')} skipped${n('todo') > 0 ? `, ${n('todo')} todo` : ''}`;
}

let eventsSeq = 0;
/** A file of its own for a test job's events: pools may run at the same time. */
function nextEventsFile(eventsDir: string): string {
  return path.join(eventsDir, `${eventsSeq++}.jsonl`);
}

/**
 * Runs jobs `slots` at a time in the order given; each result is reported as it comes. An e2e job first
 * waits for `built` (the build, running beside the first jobs) and is left out if the build failed.
 * `lastHandedOut` is called once, as the last job is taken.
 */
export async function pool(
  jobs: Job[],
  slots: number,
  eventsDir: string,
  built: Promise<boolean> = Promise.resolve(true),
  lastHandedOut?: () => void,
): Promise<JobResult[]> {
  const results: JobResult[] = [];
  let next = 0;
  const worker = async (slot: number): Promise<void> => {
    while (next < jobs.length) {
      const job = jobs[next++]!;
      if (next === jobs.length) lastHandedOut?.();
      if (job.kind === 'e2e' && !(await built)) continue;
      const eventsFile = job.testFile ? nextEventsFile(eventsDir) : null;
      const r = await runJob(job, slot, eventsFile);
      report(r);
      results.push(r);
    }
  };
  await Promise.all(Array.from({ length: Math.min(slots, jobs.length) }, (_, slot) => worker(slot)));
  return results;
}

async function main(): Promise<number> {
  const t0 = performance.now();
  const args = parseArgs(process.argv.slice(2));
  const { files, untiered } = discover();
  if (untiered.length > 0) {
    process.stderr.write(
      `These test files declare no tier; add "// tier: unit" (in process, no build, no daemon) or "// tier: e2e" at the top:\n` +
        untiered.map((f) => `  ${f}\n`).join(''),
    );
    return 2;
  }
  if (args.list) {
    for (const f of files) process.stdout.write(`${f.tier.padEnd(4)} ${f.exclusive ? 'alone' : '     '} ${f.file}\n`);
    return 0;
  }
  let chosen: TestFile[];
  if (args.files.length > 0) {
    const byName = new Map(files.map((f) => [f.file, f]));
    const unknown = args.files.filter((f) => !byName.has(f));
    if (unknown.length > 0) {
      process.stderr.write(`Not test files here: ${unknown.join(', ')}\n`);
      return 2;
    }
    chosen = args.files.map((f) => byName.get(f)!);
  } else chosen = args.unit ? files.filter((f) => f.tier === 'unit') : files;
  if (args.unit && chosen.some((f) => f.tier !== 'unit')) {
    process.stderr.write(`--unit runs unit files only: ${chosen.filter((f) => f.tier !== 'unit').map((f) => f.file)}\n`);
    return 2;
  }
  const whole = !args.unit && args.files.length === 0;
  showPassingOutput = !args.unit || args.verbose;
  const needsBuild = chosen.some((f) => f.tier === 'e2e');
  // One file more than the CPUs: the suite is CPU-bound, and a file's CPU grows with the queue it waits in
  // (2026-12-06 on 2 CPUs: 4 slots 601 s and 1035 s of CPU, 3 slots 564 s and 969 s, 2 slots ~600 s with
  // cores idle while files waited on their daemons).
  const slots = args.jobs ?? (args.unit ? 3 : Number(process.env.REGCACHE_TEST_JOBS ?? Math.min(MAX_JOBS, os.availableParallelism() + 1)));

  const eventsDir = await mkdtemp(path.join(os.tmpdir(), 'regcache-test-events-'));
  process.env[CA_TEMPLATE_ENV] = path.join(eventsDir, 'ca'); // made by the first file that needs it (ca-template.ts)
  const results: JobResult[] = [];
  const flaky: JobResult[] = [];
  try {
    // The build runs beside the checks and the unit files, which do not need it (it leaves a core half idle
    // for its 7 s); the e2e files wait for it, and are left out if it fails.
    const build =
      needsBuild || whole
        ? runJob({ name: 'build', kind: 'check', command: ['npm', 'run', '--silent', 'build'], timeoutMs: 300_000, testFile: false }, slots, null).then((r) => {
            report(r);
            results.push(r);
            return r;
          })
        : null;
    // The e2e files bundled beside the build (about a second): each then starts without tsx.
    const e2eFiles = chosen.filter((f) => f.tier === 'e2e').map((f) => f.file);
    const bundled = e2eFiles.length === 0 ? Promise.resolve() : makeBundles(e2eFiles);
    const built = Promise.all([build === null ? true : build.then((r) => failure(r) === null), bundled]).then(([ok]) => ok);
    const previous = readDurations();
    const estimate = (j: Job): number =>
      previous[j.name] ?? KNOWN_SECONDS[j.name] ?? (j.command[0] === 'test/harness/unit-group.ts' ? 2 * (j.command.length - 1) : j.kind === 'e2e' ? 30 : 2);
    // Named files run a process each (what one is debugging); otherwise the unit files run in groups.
    const grouped = args.files.length === 0;
    const unitFiles = chosen.filter((f) => f.tier === 'unit' && !f.exclusive);
    const unitJobs = grouped ? unitGroups(unitFiles, args.unit ? slots : 2, (f) => estimate(testJob(f))) : unitFiles.map((f) => testJob(f));
    // Longest first, checks among the files: a check put before them all held a slot the longest file
    // (the image's, most of the run) then waited for; a long file started last ends the run late.
    const concurrent = [...(whole ? checkJobs() : []), ...chosen.filter((f) => f.tier === 'e2e' && !f.exclusive).map((f) => testJob(f)), ...unitJobs].sort(
      (a, b) => estimate(b) - estimate(a),
    );
    // Files that need the machine to themselves, one at a time once the pool has drained. The first may set up
    // beside the pool's last files (its header says so): it starts as the last one does, with a band of
    // ports after the pool's, and the runner creates the file REGCACHE_TEST_ALONE names once the pool has
    // drained, which machineToItself() waits for.
    const exclusive = chosen.filter((f) => f.exclusive);
    const early = exclusive[0]?.setsUpBeside === true && concurrent.length > 0 ? exclusive.shift()! : null;
    const aloneFile = path.join(eventsDir, 'machine-to-itself');
    let earlyRun: Promise<JobResult | null> | null = null;
    const startEarly = (): void => {
      if (early === null || earlyRun !== null) return;
      earlyRun = built.then(async (ok) => {
        if (!ok) return null;
        const r = await runJob(testJob(early), slots, nextEventsFile(eventsDir), { REGCACHE_TEST_ALONE: aloneFile });
        report(r);
        return r;
      });
    };
    results.push(...(await pool(concurrent, slots, eventsDir, built, startEarly)));
    writeFileSync(aloneFile, '');
    if (!(await built)) return summary(results, t0);
    const earlyResult = earlyRun === null ? null : await earlyRun;
    if (earlyResult !== null) results.push(earlyResult);
    results.push(
      ...(await pool(
        exclusive.map((f) => testJob(f)),
        1,
        eventsDir,
      )),
    );
    // An end-to-end file that failed beside others runs once more, alone: one that then passes is reported
    // as flaky (a race or a timing that load exposes: the first failure's output is above, and the summary
    // names it), not as a failure; one that fails again is a failure.
    for (const first of results.filter((r) => failure(r) !== null && r.job.testFile && r.job.kind === 'e2e' && slots > 1)) {
      process.stdout.write(`── ${first.job.name} failed beside other files: running it again, alone\n`);
      const again = await runJob(first.job, 0, path.join(eventsDir, `rerun-${flaky.length}-${results.indexOf(first)}.jsonl`));
      report(again);
      if (failure(again) === null) flaky.push(first);
      results.splice(results.indexOf(first), 1, ...(failure(again) === null ? [again] : [first, again]));
    }
    writeDurations(previous, results);
  } finally {
    await rm(eventsDir, { recursive: true, force: true });
  }
  return summary(results, t0, flaky);
}

function summary(results: JobResult[], t0: number, flaky: JobResult[] = []): number {
  const outcomes = results.flatMap((r) => r.outcomes.map((o) => ({ ...o, file: o.file === undefined ? r.job.name : path.relative(ROOT, o.file) })));
  const failed = results.filter((r) => failure(r) !== null);
  const skips = outcomes.filter((o) => o.outcome === 'skip' || o.outcome === 'todo');
  const files = new Set(outcomes.map((o) => o.file)).size;
  const wall = (performance.now() - t0) / 1000;
  const lines = ['', `══ ${files} files, ${tally(outcomes)}, in ${wall.toFixed(0)} s`];
  if (skips.length > 0) {
    lines.push('Skipped:');
    for (const s of skips) lines.push(`  ${s.file}: ${s.name}${s.reason === '' ? '' : ` (${s.reason})`}`);
  }
  lines.push('Slowest:');
  for (const r of [...results].sort((a, b) => b.seconds - a.seconds).slice(0, 8)) lines.push(`  ${r.seconds.toFixed(1).padStart(6)} s  ${r.job.name}`);
  const costed = results.filter((r) => r.cpuSeconds !== null);
  if (costed.length > 0) {
    // What the machine could give in the time (every core) against what the jobs used: near 100%, only less
    // CPU per file makes the run shorter; well below, better packing would.
    const used = costed.reduce((n, r) => n + r.cpuSeconds!, 0);
    const cores = os.availableParallelism();
    lines.push(`CPU: ${used.toFixed(0)} s used of ${(wall * cores).toFixed(0)} s (${cores} cores × ${wall.toFixed(0)} s); most:`);
    for (const r of [...costed].sort((a, b) => b.cpuSeconds! - a.cpuSeconds!).slice(0, 8))
      lines.push(`  ${r.cpuSeconds!.toFixed(1).padStart(6)} s  ${r.job.name}`);
  }
  if (flaky.length > 0) {
    lines.push('FLAKY (failed beside other files, passed alone; not counted as failures, but look at them):');
    for (const r of flaky)
      for (const o of r.outcomes.filter((x) => x.outcome === 'fail'))
        lines.push(`  ✖ ${o.file === undefined ? r.job.name : path.relative(ROOT, o.file)}: ${o.name}: ${(o.error ?? '').split('\n')[0]}`);
  }
  if (failed.length > 0) {
    lines.push('FAILED:');
    for (const r of failed) {
      lines.push(`  ${r.job.name}: ${failure(r)}`);
      for (const o of r.outcomes.filter((x) => x.outcome === 'fail'))
        lines.push(`    ✖ ${o.file === undefined ? '' : `${path.relative(ROOT, o.file)}: `}${o.name}: ${(o.error ?? '').split('\n')[0]}`);
    }
  }
  process.stdout.write(lines.join('\n') + '\n');
  return failed.length > 0 ? 1 : 0;
}

if (process.argv[1] !== undefined && path.resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  // exitCode, not exit(): output to a pipe (CI's log) is written asynchronously and must not be cut.
  main().then(
    (code) => (process.exitCode = code),
    (err: unknown) => {
      process.stderr.write(`${err instanceof Error ? err.message : String(err)}\n`);
      process.exitCode = 2;
    },
  );
}
