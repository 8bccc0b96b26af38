// LOG_FORMAT=pretty (the default on a terminal): each JSON record pino makes, rewritten as one line a
// person scans. A request line starts with its cache status, coloured, then registry, repository (with
// the tag), kind, short digest, size and duration; other lines start with their level and message. The
// remaining fields follow as key=value, and the clock comes last. Newlines inside values are escaped:
// one record is always one line.
import { registryDisplayName } from '../reference/registry-name.js';
import { shortDigest } from '../reference/digest.js';
import { formatBytes } from './format-bytes.js';

const ESC = '\u001b[';
const STATUS_COLOURS: Record<string, string> = {
  HIT: '32', // green
  REVALIDATED: '32',
  STALE: '35', // magenta
  MISS: '33', // yellow
  BYPASS: '34', // blue
  DENIED: '31', // red
  REJECTED: '31',
  CORRUPT: '1;31', // bold red
  LOCAL: '2',
  ADMIN: '2',
};
const LEVEL_COLOURS: Record<string, string> = { trace: '2', debug: '2', info: '36', warn: '33', error: '31', fatal: '1;31' };
const STATUS_WIDTH = 'REVALIDATED'.length;
// Shown in the line's own columns, or noise in this format (pid and hostname are off in every format).
const REQUEST_COLUMNS = new Set(['cache', 'kind', 'method', 'host', 'repository', 'path', 'digest', 'bytes', 'ms', 'status']);
const ALWAYS_HIDDEN = new Set(['level', 'time', 'msg', 'worker']);

export function prettyLine(record: Record<string, unknown>, colour: boolean): string {
  const paint = (code: string | undefined, text: string) => (colour && code ? `${ESC}${code}m${text}${ESC}0m` : text);
  const dim = (text: string) => paint('2', text);
  const level = String(record.level ?? 'info');
  const request = record.msg === 'request' && typeof record.cache === 'string';
  const head = request
    ? requestColumns(record, paint)
    : `${paint(LEVEL_COLOURS[level], level.toUpperCase().padEnd(STATUS_WIDTH))} ${oneLine(String(record.msg ?? ''))}`;
  const hidden = request ? REQUEST_COLUMNS : new Set<string>();
  const extra = Object.entries(record)
    .filter(([key, value]) => !ALWAYS_HIDDEN.has(key) && !hidden.has(key) && value !== undefined)
    .map(([key, value]) => `${key}=${formatValue(value)}`);
  // A request line at warn or error (it carries an error) says so after its columns.
  const flag = request && (level === 'warn' || level === 'error') ? ` ${paint(LEVEL_COLOURS[level], level.toUpperCase())}` : '';
  const worker = typeof record.worker === 'number' ? ` w${record.worker}` : '';
  const clock = typeof record.time === 'string' ? record.time.slice(11, 23) : '';
  return `${head}${flag}${extra.length ? ' ' + dim(extra.join(' ')) : ''} ${dim(`${clock}${worker}`)}\n`;
}

function requestColumns(r: Record<string, unknown>, paint: (code: string | undefined, text: string) => string): string {
  const cache = String(r.cache);
  const status = typeof r.status === 'number' ? r.status : 0;
  const host = typeof r.host === 'string' ? r.host : '-';
  const path = typeof r.path === 'string' ? r.path : '';
  const kind = String(r.kind ?? '');
  const tag = kind === 'manifest-by-tag' ? /\/manifests\/([^/]+)$/.exec(path)?.[1] : undefined;
  const what = typeof r.repository === 'string' ? `${r.repository}${tag ? ':' + tag : ''}` : path;
  const columns = [
    paint(STATUS_COLOURS[cache], cache.padEnd(STATUS_WIDTH)),
    registryDisplayName(host).padEnd(16),
    oneLine(what).padEnd(28),
    (kind.startsWith('manifest') ? 'manifest' : kind).padEnd(8),
    typeof r.digest === 'string' ? shortDigest(r.digest) : '-'.padEnd(12),
    formatBytes(typeof r.bytes === 'number' ? r.bytes : 0).padStart(10),
    `${typeof r.ms === 'number' ? r.ms : 0} ms`.padStart(9),
  ];
  // The HTTP status only when it is not plain success: a 401 or a 503 is worth reading, a 200 is not.
  if (status >= 300 || (typeof r.method === 'string' && r.method !== 'GET')) columns.push(`${r.method ?? ''} ${status}`.trim());
  return columns.join(' ');
}

function formatValue(value: unknown): string {
  if (typeof value === 'string') return /[\s"=]/.test(value) || value === '' ? JSON.stringify(value) : value;
  return oneLine(JSON.stringify(value) ?? String(value));
}

function oneLine(text: string): string {
  return text.replace(/\r?\n/g, '\\n');
}
