// One checked GET outside the load: answered 200, and the body hashes to the digest it was asked for.
// Used to prime caches and to make sure every server the bench compares answers the same bytes.
import { createHash } from 'node:crypto';
import { request, type Dispatcher } from 'undici';

export async function expectDigest(url: string, digest: string, headers: Record<string, string>, dispatcher?: Dispatcher): Promise<void> {
  // A copy: undici's ProxyAgent adds `host` to the headers object it is given, and the caller's object
  // goes on to wrk and the generator (two Host headers: docker-registry answers 400).
  const res = await request(url, { headers: { ...headers }, ...(dispatcher ? { dispatcher } : {}), headersTimeout: 30_000, bodyTimeout: 30_000 });
  const body = Buffer.from(await res.body.arrayBuffer());
  const got = `sha256:${createHash('sha256').update(body).digest('hex')}`;
  if (res.statusCode !== 200 || got !== digest)
    throw new Error(`GET ${url}: HTTP ${res.statusCode}, ${body.length} bytes hashing to ${got}, expected 200 and ${digest}`);
}
