// `regcache status`: the running server's status summary (the status page's figures) in a terminal, or
// as JSON for scripts (--json). Asked over CACHE_DIR's control socket, like `regcache cache`, so it
// needs no port and no admin credentials: whoever can open the socket can read the cache anyway.
import type { Command } from 'commander';
import { askControl } from '../admin/control-socket.js';
import { STATUS_COMMAND } from '../admin/server-ports.js';
import { configOrFail } from './config-or-fail.js';
import { shortDigest } from '../reference/digest.js';
import { formatBytes } from '../telemetry/format-bytes.js';
import type { Ratio, StatusReport } from '../telemetry/status-report.js';
import { fail } from './exit.js';
import { errorMessage } from '../telemetry/error-message.js';

export function addStatusCommand(program: Command): void {
  program
    .command('status')
    .description("The running server's figures: hit ratios, bytes saved, store, fills, most-pulled images, recent errors, workers")
    .option('--cache-dir <dir>', "the running server's content store (CACHE_DIR, default ./data/cache)")
    .option('--json', 'the summary as JSON (the same as GET /api/v1/status)')
    .addHelpText('after', '\nExamples:\n  $ regcache status\n  $ regcache status --json | jq .hitRatio.lastHour')
    .action(async (options: { cacheDir?: string; json?: boolean }) => {
      const { cacheDir } = configOrFail(options.cacheDir ? { cacheDir: options.cacheDir } : {});
      let answer;
      try {
        answer = await askControl(cacheDir, { cmd: STATUS_COMMAND, args: {} });
      } catch (err) {
        fail(`cannot ask the server for CACHE_DIR=${cacheDir}: ${errorMessage(err)}`, 1);
      }
      if (answer === null) fail(`no regcache server is running for CACHE_DIR=${cacheDir} (start one with \`regcache serve\`, or pass --cache-dir)`, 1);
      if (!answer.ok) fail(answer.error, 1);
      const report = answer.result as StatusReport;
      process.stdout.write(options.json ? JSON.stringify(report, null, 2) + '\n' : formatStatus(report));
    });
}

/** The summary as a terminal reads it: aligned, one subject a line. */
export function formatStatus(r: StatusReport): string {
  const lines: string[] = [];
  const row = (label: string, value: string) => lines.push(`${label.padEnd(23)}${value}`);
  const share = (x: Ratio, bytes: boolean) =>
    x.ratio === null
      ? '-'
      : `${(x.ratio * 100).toFixed(1)}% (${bytes ? `${formatBytes(x.cache)} of ${formatBytes(x.cache + x.upstream)}` : `${x.cache} of ${x.cache + x.upstream}`})`;
  const mode =
    r.processes.mode === 'workers'
      ? `${r.processes.workers.length} workers`
      : r.processes.mode === 'replica'
        ? `replica ${r.processes.replica}`
        : 'one process';
  lines.push(`regcache ${r.version}, up since ${r.startedAt} (${mode})`, '');
  for (const [label, w] of [
    ['last hour', r.hitRatio.lastHour],
    ['last day', r.hitRatio.lastDay],
    ['since start', r.hitRatio.sinceStart],
  ] as const) {
    row(`hit ratio, ${label}`, `requests ${share(w.requests, false)}, bytes ${share(w.bytes, true)}`);
  }
  row('bytes served', `${formatBytes(r.hitRatio.sinceStart.bytes.cache)} from cache, ${formatBytes(r.hitRatio.sinceStart.bytes.upstream)} from upstream`);
  const saved = Object.entries(r.upstreamManifestGetsSaved);
  row('manifest GETs saved', saved.length ? saved.map(([reg, n]) => `${reg} ${n}`).join(', ') : '0');
  row('Docker Hub pulls left', r.dockerHubRemaining === null ? 'not reported' : String(r.dockerHubRemaining));
  const s = r.store;
  const evictions = Object.entries(s.evictions).filter(([, n]) => n > 0);
  row(
    'store',
    `${formatBytes(s.bytes)} of ${formatBytes(s.maxBytes)} (${s.maxBytes ? ((s.bytes / s.maxBytes) * 100).toFixed(1) : '0.0'}%), ${s.entries} entries, evictions ${evictions.length ? evictions.map(([k, n]) => `${k} ${n}`).join(', ') : '0'}`,
  );
  if (s.reachable !== null) row('bucket', s.reachable ? 'reachable' : 'UNREACHABLE');
  row(
    'requests',
    Object.entries(r.requests)
      .map(([k, n]) => `${k} ${n}`)
      .join(', ') || 'none',
  );
  const errors = Object.entries(r.upstreamErrors);
  row('upstream errors', errors.length ? errors.map(([k, n]) => `${k} ${n}`).join(', ') : '0');
  if (r.processes.mode === 'workers') {
    row(
      'workers',
      r.processes.workers.map((w) => `#${w.slot} ${w.state}${w.pid ? ` (pid ${w.pid})` : ''}${w.restarts ? `, ${w.restarts} restarts` : ''}`).join('; '),
    );
  }
  lines.push('', `fills in progress: ${r.fills.length}`);
  for (const f of r.fills)
    lines.push(
      `  ${f.registry}/${f.repository ?? '?'} ${shortDigest(f.digest)} ${formatBytes(f.written)}${f.size === null ? '' : ` of ${formatBytes(f.size)}`}`,
    );
  lines.push(`most pulled:${r.topImages.length ? '' : ' none yet'}`);
  for (const i of r.topImages) lines.push(`  ${String(i.pulls).padStart(6)}  ${i.image}`);
  lines.push(`recent errors:${r.recentErrors.length ? '' : ' none'}`);
  for (const e of r.recentErrors.slice(0, 10)) {
    lines.push(`  ${e.time} ${e.cache} ${e.status} ${e.registry}/${e.repository ?? '-'} ${e.kind}${e.digest ? ' ' + shortDigest(e.digest) : ''}: ${e.message}`);
  }
  return lines.join('\n') + '\n';
}
