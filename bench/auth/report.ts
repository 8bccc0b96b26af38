// The auth bench's report: a fixed-width table for stdout and a Markdown section for docs/benchmarks.md,
// from the same rows.
import { markdownTable, textTable } from '../load/report.js';
import type { Machine } from '../load/machine.js';
import type { AttackAddresses } from './attackers.js';

export interface PhaseRow {
  door: 'proxy' | 'mirror';
  attack: AttackAddresses | null; // null: no attack
  requests: number; // of the authenticated client
  latencyMs: { p50: number; p99: number; max: number };
  p99Ratio: number; // against the same door with no attack
  errors: number;
  errorSamples: string[];
  attackers: { attempts: number; perSecond: number; byStatus: Record<string, number> } | null;
  bcryptRuns: number; // regcache_auth_checks_total valid + invalid during the phase
  unchecked: number; // refused without a comparison
  regcacheCpuSeconds: number;
}

export interface AuthBenchResult {
  date: string;
  machine: Machine;
  loadAverage: { before: number; after: number };
  options: { seconds: number; rounds: number; clients: number; cost: number; rampSeconds: number; warmupSeconds: number };
  rows: PhaseRow[];
  failures: string[];
}

const TARGET_RATIO = 2;
const COMMANDS = ['npm run bench', 'npm run --silent build && node --import tsx bench/auth-bench.ts'];

const f1 = (n: number): string => (Number.isFinite(n) ? n.toFixed(1) : '-');
const f2 = (n: number): string => (Number.isFinite(n) ? n.toFixed(2) : '-');
const int = (n: number): string => (Number.isFinite(n) ? Math.round(n).toLocaleString('en-US') : '-');

const ATTACK_LABEL: Record<AttackAddresses | 'none', string> = {
  none: 'none',
  one: 'from one address',
  'per-client': 'one address per attacker',
  'per-attempt': 'a new address per attempt',
};

function table(r: AuthBenchResult): string[][] {
  const rows = [
    [
      'door',
      'wrong passwords',
      'requests',
      'p50 ms',
      'p99 ms',
      'p99 vs none',
      `<= ${TARGET_RATIO}x`,
      'errors',
      'attempts/s',
      'answers',
      'bcrypt runs',
      'unchecked',
      'regcache CPU s',
    ],
  ];
  for (const p of r.rows) {
    const answers = p.attackers
      ? Object.entries(p.attackers.byStatus)
          .map(([s, n]) => `${s} x${int(n)}`)
          .join(', ')
      : '';
    rows.push([
      p.door === 'proxy' ? 'proxy (CONNECT + TLS)' : 'mirror (HTTP)',
      p.attack === null ? ATTACK_LABEL.none : `${r.options.clients} attackers, ${ATTACK_LABEL[p.attack]}`,
      int(p.requests),
      f2(p.latencyMs.p50),
      f2(p.latencyMs.p99),
      p.attack === null ? 'baseline' : `${f2(p.p99Ratio)}x`,
      p.attack === null ? '' : p.p99Ratio <= TARGET_RATIO ? 'PASS' : 'FAIL',
      String(p.errors),
      p.attackers ? int(p.attackers.perSecond) : '',
      answers,
      int(p.bcryptRuns),
      int(p.unchecked),
      f1(p.regcacheCpuSeconds),
    ]);
  }
  return rows;
}

function notes(r: AuthBenchResult): string[] {
  const o = r.options;
  return [
    `PROXY_AUTH: an htpasswd of 3 bcrypt users, cost ${o.cost}; the mirror asks for the same users. The measured client is one of them; it fetches a cached manifest by digest, one request after another, each on a new connection (so that every request is authenticated: on a keep-alive connection only the first would be), for ${o.seconds} s per row, in ${o.rounds} turns of ${f1(o.seconds / o.rounds)} s taken in the order of the rows (so that whatever else runs on the machine falls on all rows alike): proxy = TCP + CONNECT with Proxy-Authorization + TLS handshake + GET; mirror = TCP + GET with Authorization. Its header is verified once and then answered from the cache of verified credentials, so its latency shows what the attack does to everything else regcache runs.`,
    `Attackers: ${o.clients} loops in a process of their own, each sending a distinct random password after the other (every other one for a known user), a new connection each, to the same door, starting ${o.rampSeconds} s before the client is measured, from fresh addresses each turn. "from one address": all from one (127.0.0.x), the issue's case (the per-address throttle holds it to one check per delay); "one address per attacker" (each address throttled after its 5 free failures); "a new address per attempt": no throttle applies, what is left is the bcrypt worker thread with its bounded queue (attempts beyond it are answered "unchecked", without a bcrypt run).`,
    "bcrypt runs and unchecked: regcache_auth_checks_total during the row's turns (valid + invalid; unchecked), checks still draining from the turn before included (hence the few in the rows without attack). Before these changes bcrypt ran on the event loop: the issue measured an authenticated HIT at 4 s p99 under 50 such clients, against 15 ms without; this bench against the code before them is in decisions.md #59.",
    `regcache, the measured client and the attackers share the same ${r.machine.cpus} cores; regcache CPU is its user + system time during the row's turns (the attackers' ${o.rampSeconds} s ramp-ups included). Attempts still waiting when a turn ends are dropped, not counted.`,
  ];
}

function machineLine(m: Machine): string {
  return `${m.cpus} CPUs (${m.cpuModel}), ${m.ramGiB.toFixed(1)} GiB RAM, ${m.kernel}; node ${m.node}, regcache ${m.regcache}`;
}

function loadLine(r: AuthBenchResult): string {
  return `Load average (1 min) ${f1(r.loadAverage.before)} before the run, ${f1(r.loadAverage.after)} after: anything above what the bench itself adds is other processes competing for the same cores.`;
}

export function textReport(r: AuthBenchResult): string {
  return [
    '',
    'regcache auth bench: an authenticated client while wrong passwords flood in',
    `  ${machineLine(r.machine)}`,
    `  ${loadLine(r)}`,
    '',
    textTable(table(r)),
    ...notes(r).map((n) => `  ${n}`),
    '',
    r.failures.length === 0 ? 'result: no errors' : `FAILED:\n${r.failures.map((f) => `  - ${f}`).join('\n')}`,
    '',
  ].join('\n');
}

export function markdownSection(r: AuthBenchResult): string {
  return [
    '## Password checks under attack: an authenticated client while wrong passwords flood in',
    '',
    `Measured ${r.date} on ${machineLine(r.machine)}. ${loadLine(r)}`,
    '',
    `Reproduce: ${COMMANDS.map((c) => `\`${c}\``).join(', or this bench alone: ')}.`,
    '',
    markdownTable(table(r)),
    '',
    ...notes(r).map((n) => `- ${n}`),
  ].join('\n');
}
