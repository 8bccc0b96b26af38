// Reading an upstream body into memory, never more than a bound: a token response, a manifest a command
// reads. Whatever upstream sends (no Content-Length, an endless body), at most `limit` bytes are held; past
// it the body is destroyed and the read fails with a BodyTooLargeError that says what and how large.
import type { Readable } from 'node:stream';
import { discardBody } from './upstream-client.js';

export class BodyTooLargeError extends Error {
  override name = 'BodyTooLargeError';

  constructor(
    readonly what: string,
    readonly limit: number,
  ) {
    super(`${what} is larger than ${limit} bytes; not read`);
  }
}

/** The whole body, when it is at most `limit` bytes (announced or sent); BodyTooLargeError otherwise. */
export async function readBounded(body: Readable, limit: number, what: string, contentLength?: string | string[]): Promise<Buffer> {
  const announced = Array.isArray(contentLength) ? contentLength[0] : contentLength;
  if (announced !== undefined && /^\d+$/.test(announced) && Number(announced) > limit) {
    discardBody(body);
    throw new BodyTooLargeError(what, limit);
  }
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of body as AsyncIterable<Buffer>) {
    size += chunk.length;
    if (size > limit) {
      discardBody(body);
      throw new BodyTooLargeError(what, limit);
    }
    chunks.push(chunk);
  }
  return Buffer.concat(chunks, size);
}
