// The one writer of a content response's head, for stored content, a running fill and a HEAD answered
// from a verified fill: media type, digest and ETag, and the single byte range a client may ask for
// (206 with Content-Range, 416 when unsatisfiable; malformed or multi-range headers are ignored).
import type { OutgoingHttpHeaders, ServerResponse } from 'node:http';
import { parseRange } from './byte-range.js';

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
