// The one writer of a content response's head, for stored content, a running fill and a HEAD answered
// from a verified fill: media type, digest and ETag, and the single byte range a client may ask for
// (206 with Content-Range, 416 when unsatisfiable; malformed or multi-range headers are ignored, RFC 9110
// 14.2: registry clients send a single "bytes=" range to resume).
import type { OutgoingHttpHeaders, ServerResponse } from 'node:http';

export interface ContentHead {
  digest: string;
  mediaType: string;
  size: number | null; // null: not known (a fill without Content-Length): chunked, and Range is ignored
}

/** The bytes to send, [start, end] (end null: to the end, size unknown). */
export interface BodyRange {
  start: number;
  end: number | null;
}

/** Writes the head for the client's Range; the bytes to send, or null when it was answered 416. */
export function writeContentHead(res: ServerResponse, head: ContentHead, rangeHeader: string | undefined): BodyRange | null {
  const headers: OutgoingHttpHeaders = { 'content-type': head.mediaType, 'docker-content-digest': head.digest, etag: `"${head.digest}"` };
  if (head.size === null) {
    res.writeHead(200, headers);
    return { start: 0, end: null };
  }
  const range = parseRange(rangeHeader, head.size);
  if (range.kind === 'unsatisfiable') {
    res.writeHead(416, { 'content-range': `bytes */${head.size}` }).end();
    return null;
  }
  headers['accept-ranges'] = 'bytes';
  let status = 200;
  let start = 0;
  let end = head.size - 1;
  if (range.kind === 'range') {
    ({ start, end } = range);
    status = 206;
    headers['content-range'] = `bytes ${start}-${end}/${head.size}`;
  }
  headers['content-length'] = end - start + 1;
  res.writeHead(status, headers);
  return { start, end };
}

export type RangeResult = { kind: 'none' } | { kind: 'range'; start: number; end: number } | { kind: 'unsatisfiable' };

/** The client's Range header against a body of `size` bytes. */
export function parseRange(header: string | undefined, size: number): RangeResult {
  if (!header) return { kind: 'none' };
  const m = /^bytes=(\d*)-(\d*)$/.exec(header.trim());
  if (!m || (m[1] === '' && m[2] === '')) return { kind: 'none' }; // malformed or multi-range: ignore (RFC 9110 14.2)
  if (m[1] === '') {
    const suffix = Number(m[2]);
    if (suffix === 0 || size === 0) return { kind: 'unsatisfiable' };
    return { kind: 'range', start: Math.max(0, size - suffix), end: size - 1 };
  }
  const start = Number(m[1]);
  const end = m[2] === '' ? size - 1 : Math.min(Number(m[2]), size - 1);
  if (!Number.isSafeInteger(start) || start >= size || end < start) return { kind: 'unsatisfiable' };
  return { kind: 'range', start, end };
}
