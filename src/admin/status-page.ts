// The status page (GET /status on the admin door): the StatusReport as one self-contained HTML page,
// no scripts and no external assets, readable on a phone, reloading itself every REFRESH_SECONDS. Every
// figure carries a data-figure attribute naming it (the browser test reads them; so can a scraper).
// Everything that comes from clients or upstream (image names, error messages) is escaped.
import { shortDigest } from '../reference/digest.js';
import { formatBytes } from '../telemetry/format-bytes.js';
import type { Ratio, RatioPair, StatusReport, WorkerState } from '../telemetry/status-report.js';

export const REFRESH_SECONDS = 10;

const STATUS_ORDER = ['HIT', 'REVALIDATED', 'STALE', 'MISS', 'BYPASS', 'DENIED', 'CORRUPT', 'REJECTED', 'LOCAL'];

export function renderStatusPage(report: StatusReport): string {
  const { hitRatio, store } = report;
  const full = store.maxBytes > 0 ? store.bytes / store.maxBytes : 0;
  const evictions = Object.values(store.evictions).reduce((n, v) => n + v, 0);
  const saved = Object.entries(report.upstreamManifestGetsSaved)
    .filter(([, n]) => n > 0)
    .sort(([, a], [, b]) => b - a);
  const requests = Object.entries(report.requests).sort(([a], [b]) => order(a) - order(b));
  return `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta http-equiv="refresh" content="${REFRESH_SECONDS}">
<title>regcache status</title>
<style>${STYLE}</style>
</head>
<body>
<header>
  <h1>regcache <small>${esc(report.version)}</small></h1>
  <p class="muted">Up since <time data-figure="started-at" datetime="${esc(report.startedAt)}">${esc(shortTime(report.startedAt))}</time> (${esc(duration(Date.parse(report.generatedAt) - Date.parse(report.startedAt)))}) · ${esc(processSummary(report))} · refreshed every ${REFRESH_SECONDS} s</p>
</header>
<main>
<section class="card wide">
  <h2>Hit ratio</h2>
  <table class="ratios">
    <thead><tr><th></th><th>Last hour</th><th>Last day</th><th>Since start</th></tr></thead>
    <tbody>
      ${ratioRow('Requests', 'requests', 'requests', hitRatio)}
      ${ratioRow('Bytes', 'bytes', 'bytes', hitRatio)}
    </tbody>
  </table>
  <p class="muted">Requests: blobs and manifests answered from the cache (HIT, REVALIDATED, STALE) against those fetched upstream (MISS, BYPASS). Bytes: every body byte sent, by where it came from.</p>
</section>
<section class="card">
  <h2>Bytes served</h2>
  <dl>
    <dt>From the cache</dt><dd data-figure="bytes-cache" data-value="${hitRatio.sinceStart.bytes.cache}">${formatBytes(hitRatio.sinceStart.bytes.cache)}</dd>
    <dt>From upstream</dt><dd data-figure="bytes-upstream" data-value="${hitRatio.sinceStart.bytes.upstream}">${formatBytes(hitRatio.sinceStart.bytes.upstream)}</dd>
  </dl>
  <div class="bar" title="share of bytes from the cache"><span style="width:${pct(hitRatio.sinceStart.bytes.ratio ?? 0)}"></span></div>
</section>
<section class="card">
  <h2>Store</h2>
  <dl>
    <dt>Used</dt><dd data-figure="store-bytes" data-value="${store.bytes}">${formatBytes(store.bytes)} of ${formatBytes(store.maxBytes)} <span class="muted">(${pct(full)})</span></dd>
    <dt>Entries</dt><dd data-figure="store-entries">${store.entries}</dd>
    <dt>Evictions</dt><dd data-figure="evictions" data-value="${evictions}">${evictions}${evictions > 0 ? ` <span class="muted">(${esc(listCounts(store.evictions))})</span>` : ''}</dd>
    ${store.reachable === null ? '' : `<dt>Bucket</dt><dd data-figure="store-reachable">${store.reachable ? '<span class="ok">reachable</span>' : '<span class="bad">unreachable</span>'}</dd>`}
  </dl>
  <div class="bar${full > 0.9 ? ' warn' : ''}" title="CACHE_MAX_SIZE used"><span style="width:${pct(Math.min(1, full))}"></span></div>
</section>
<section class="card">
  <h2>Upstream</h2>
  <dl>
    <dt>Manifest GETs saved</dt><dd data-figure="manifest-gets-saved" data-value="${sumOf(report.upstreamManifestGetsSaved)}">${sumOf(report.upstreamManifestGetsSaved)}</dd>
    ${saved.map(([registry, n]) => `<dt class="sub">${esc(registry)}</dt><dd data-figure="manifest-gets-saved:${esc(registry)}">${n}</dd>`).join('\n    ')}
    <dt>Docker Hub pulls left</dt><dd data-figure="docker-hub-remaining">${report.dockerHubRemaining === null ? '<span class="muted">not reported yet</span>' : report.dockerHubRemaining}</dd>
    <dt>Upstream errors</dt><dd data-figure="upstream-errors" data-value="${sumOf(report.upstreamErrors)}">${sumOf(report.upstreamErrors)}${Object.keys(report.upstreamErrors).length ? ` <span class="muted">(${esc(listCounts(report.upstreamErrors))})</span>` : ''}</dd>
  </dl>
</section>
<section class="card">
  <h2>Requests since start</h2>
  <table>
    <tbody>
      ${requests.map(([status, n]) => `<tr><td>${badge(status)}</td><td class="num" data-figure="requests:${esc(status)}">${n}</td></tr>`).join('\n      ') || '<tr><td class="muted">none yet</td></tr>'}
    </tbody>
  </table>
</section>
<section class="card">
  <h2>Fills in progress</h2>
  ${
    report.fills.length === 0
      ? '<p class="muted" data-figure="fills" data-value="0">None</p>'
      : `<ul class="fills" data-figure="fills" data-value="${report.fills.length}">${report.fills
          .map(
            (f) =>
              `<li><span class="mono">${esc(f.registry)}/${esc(f.repository ?? '?')} ${esc(shortDigest(f.digest))}</span> ${formatBytes(f.written)}${f.size === null ? '' : ` of ${formatBytes(f.size)}`}<div class="bar"><span style="width:${pct(f.size ? f.written / f.size : 0)}"></span></div></li>`,
          )
          .join('')}</ul>`
  }
</section>
<section class="card">
  <h2>Most pulled</h2>
  ${
    report.topImages.length === 0
      ? '<p class="muted">No pulls yet</p>'
      : `<table><tbody>${report.topImages.map((i) => `<tr><td class="mono wrap">${esc(i.image)}</td><td class="num" data-figure="pulls:${esc(i.image)}">${i.pulls}</td></tr>`).join('')}</tbody></table>`
  }
</section>
<section class="card">
  <h2>${report.processes.mode === 'workers' ? 'Workers' : 'Process'}</h2>
  ${processes(report)}
</section>
<section class="card wide">
  <h2>Recent errors</h2>
  ${
    report.recentErrors.length === 0
      ? '<p class="muted" data-figure="recent-errors" data-value="0">None</p>'
      : `<table class="errors" data-figure="recent-errors" data-value="${report.recentErrors.length}"><tbody>${report.recentErrors
          .slice(0, 20)
          .map(
            (e) =>
              `<tr><td class="muted nowrap">${esc(e.time.slice(11, 19))}</td><td>${badge(e.cache)}</td><td class="num">${e.status}</td><td class="mono wrap message">${esc(e.registry)}/${esc(e.repository ?? '-')} ${esc(e.kind)}${e.digest ? ' ' + esc(shortDigest(e.digest)) : ''}<div class="muted">${esc(e.message)}</div></td></tr>`,
          )
          .join('')}</tbody></table>`
  }
</section>
</main>
<footer class="muted">Figures are the counters of <a href="/metrics">/metrics</a> (this page as JSON: <a href="/api/v1/status">/api/v1/status</a>). Generated ${esc(shortTime(report.generatedAt))}.</footer>
</body>
</html>
`;
}

function ratioRow(label: string, key: keyof RatioPair, figure: string, r: StatusReport['hitRatio']): string {
  const cell = (ratio: Ratio, window: string) =>
    `<td><span class="big" data-figure="ratio-${figure}-${window}">${ratio.ratio === null ? '–' : pct(ratio.ratio)}</span><span class="muted small" data-figure="counts-${figure}-${window}">${counts(ratio, key)}</span></td>`;
  return `<tr><th>${label}</th>${cell(r.lastHour[key], 'hour')}${cell(r.lastDay[key], 'day')}${cell(r.sinceStart[key], 'start')}</tr>`;
}

function counts(ratio: Ratio, key: keyof RatioPair): string {
  return key === 'bytes' ? `${formatBytes(ratio.cache)} of ${formatBytes(ratio.cache + ratio.upstream)}` : `${ratio.cache} of ${ratio.cache + ratio.upstream}`;
}

function processes(report: StatusReport): string {
  const p = report.processes;
  if (p.mode !== 'workers') {
    return `<p>${p.mode === 'replica' ? `Replica <span class="mono">${esc(p.replica ?? '')}</span> of a fleet: each replica counts its own requests; Prometheus adds them up.` : 'One process (WORKERS=1).'}</p>`;
  }
  const now = Date.parse(report.generatedAt);
  const row = (w: WorkerState) =>
    `<tr><td>#${w.slot}</td><td class="mono">${w.pid ?? '-'}</td><td data-figure="worker-${w.slot}">${w.state === 'serving' ? '<span class="ok">serving</span>' : `<span class="bad">${w.state}</span>`}</td><td class="muted nowrap" title="${esc(w.since)}">${esc(duration(now - Date.parse(w.since)))}</td><td class="num">${w.restarts}</td></tr>`;
  return `<table><thead><tr><th>Slot</th><th>PID</th><th>State</th><th>For</th><th class="num">Restarts</th></tr></thead><tbody>${p.workers.map(row).join('')}</tbody></table>`;
}

function processSummary(report: StatusReport): string {
  const p = report.processes;
  if (p.mode === 'workers') return `${p.workers.filter((w) => w.state === 'serving').length} of ${p.workers.length} workers serving`;
  return p.mode === 'replica' ? 'fleet replica' : 'one process';
}

function badge(status: string): string {
  return `<span class="badge s-${esc(status.toLowerCase())}">${esc(status)}</span>`;
}

function order(status: string): number {
  const i = STATUS_ORDER.indexOf(status);
  return i < 0 ? STATUS_ORDER.length : i;
}

function sumOf(record: Record<string, number>): number {
  return Object.values(record).reduce((n, v) => n + v, 0);
}

function listCounts(record: Record<string, number>): string {
  return Object.entries(record)
    .filter(([, n]) => n > 0)
    .map(([k, n]) => `${k} ${n}`)
    .join(', ');
}

function pct(ratio: number): string {
  return `${(ratio * 100).toFixed(1)}%`;
}

function shortTime(iso: string): string {
  return iso.replace('T', ' ').replace(/\.\d+Z$/, ' UTC');
}

function duration(ms: number): string {
  const s = Math.max(0, Math.floor(ms / 1000));
  if (s < 120) return `${s} s`;
  if (s < 7200) return `${Math.floor(s / 60)} min`;
  if (s < 172_800) return `${Math.floor(s / 3600)} h`;
  return `${Math.floor(s / 86_400)} days`;
}

function esc(text: string): string {
  return text.replace(/[&<>"']/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' })[c]!);
}

const STYLE = `
:root { color-scheme: light dark; --bg: #f6f7f9; --card: #fff; --fg: #1d2330; --muted: #6b7280; --line: #e3e6eb; --accent: #2f6fde; --ok: #17803d; --bad: #c0262d; --warn: #b7791f; }
@media (prefers-color-scheme: dark) { :root { --bg: #12151b; --card: #1b2029; --fg: #e6e9ef; --muted: #9aa3b2; --line: #2b3240; --accent: #6aa0ff; } }
* { box-sizing: border-box; }
body { margin: 0; padding: 16px; background: var(--bg); color: var(--fg); font: 15px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; }
header h1 { margin: 0; font-size: 22px; } header h1 small { font-size: 14px; color: var(--muted); font-weight: normal; }
main { display: grid; grid-template-columns: repeat(auto-fit, minmax(280px, 1fr)); gap: 12px; margin-top: 12px; }
.card { background: var(--card); border: 1px solid var(--line); border-radius: 10px; padding: 12px 14px; min-width: 0; }
.card.wide { grid-column: 1 / -1; }
h2 { font-size: 13px; text-transform: uppercase; letter-spacing: .05em; color: var(--muted); margin: 0 0 8px; }
table { width: 100%; border-collapse: collapse; } td, th { padding: 4px 5px; text-align: left; vertical-align: top; border-bottom: 1px solid var(--line); }
tr:last-child td, tr:last-child th { border-bottom: 0; }
.ratios td { width: 28%; } thead th { color: var(--muted); font-weight: normal; font-size: 13px; }
.big { display: block; font-size: 24px; font-weight: 600; font-variant-numeric: tabular-nums; }
.small { font-size: 12px; } .num { text-align: right; font-variant-numeric: tabular-nums; }
dl { display: grid; grid-template-columns: auto 1fr; gap: 4px 12px; margin: 0; } dt { color: var(--muted); } dd { margin: 0; text-align: right; font-variant-numeric: tabular-nums; }
dt.sub { padding-left: 12px; font-size: 13px; } dt.sub + dd { font-size: 13px; }
.bar { height: 8px; background: var(--line); border-radius: 4px; overflow: hidden; margin-top: 8px; } .bar span { display: block; height: 100%; background: var(--accent); }
.bar.warn span { background: var(--warn); }
.muted { color: var(--muted); } .mono { font-family: ui-monospace, "SF Mono", Menlo, Consolas, monospace; font-size: 13px; }
.wrap { overflow-wrap: anywhere; } .errors td { width: 1%; white-space: nowrap; } .errors td.message { width: auto; white-space: normal; } .nowrap { white-space: nowrap; }
.ok { color: var(--ok); font-weight: 600; } .bad { color: var(--bad); font-weight: 600; }
.fills { list-style: none; margin: 0; padding: 0; } .fills li { margin-bottom: 8px; overflow-wrap: anywhere; }
.badge { display: inline-block; min-width: 6.5em; text-align: center; padding: 1px 6px; border-radius: 4px; font: 600 12px ui-monospace, Menlo, Consolas, monospace; color: #fff; background: #6b7280; }
.s-hit, .s-revalidated { background: #17803d; } .s-stale { background: #7c3aed; } .s-miss { background: #b7791f; } .s-bypass { background: #2f6fde; }
.s-denied, .s-corrupt, .s-rejected { background: #c0262d; }
footer { margin-top: 16px; font-size: 13px; } a { color: var(--accent); }
@media (max-width: 480px) { body { padding: 10px; } .big { font-size: 19px; } .badge { min-width: 0; } }
`;
