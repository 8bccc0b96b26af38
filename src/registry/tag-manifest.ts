// Manifests by tag are passed through (their policy is revalidation, a later concern), but the body of
// a GET is stored under its verified digest so that the by-digest requests that follow are HITs.
import crypto from 'node:crypto';
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { ContentStore } from '../cache/content-store.js';
import type { Logger } from '../log.js';
import type { RequestRecord } from '../server/access-log.js';
import type { UpstreamClient, UpstreamResponse } from '../upstream/upstream-client.js';
import { passThrough } from './pass-through.js';

// distribution refuses manifests over 4 MiB; anything larger is not worth buffering.
const MAX_MANIFEST_BYTES = 4 * 1024 * 1024;

export async function serveTagManifest(
  upstream: UpstreamClient,
  store: ContentStore,
  log: Logger,
  origin: URL,
  name: string,
  tag: string,
  req: IncomingMessage,
  res: ServerResponse,
  record: RequestRecord,
): Promise<void> {
  const observe = (response: UpstreamResponse): void => {
    if (req.method !== 'GET' || response.statusCode !== 200) return;
    const chunks: Buffer[] = [];
    let size = 0;
    response.body.on('data', (chunk: Buffer) => {
      size += chunk.length;
      if (size <= MAX_MANIFEST_BYTES) chunks.push(chunk);
    });
    response.body.once('end', () => {
      if (size > MAX_MANIFEST_BYTES) return;
      const body = Buffer.concat(chunks);
      const digest = 'sha256:' + crypto.createHash('sha256').update(body).digest('hex');
      const claimed = response.headers['docker-content-digest'];
      if (typeof claimed === 'string' && claimed.startsWith('sha256:') && claimed !== digest) {
        log.warn({ host: origin.host, path: record.path, claimed, digest }, 'upstream manifest does not match its Docker-Content-Digest; not stored');
        return;
      }
      record.digest = digest;
      const mediaType = typeof response.headers['content-type'] === 'string' ? response.headers['content-type'] : 'application/octet-stream';
      const from = { ref: `${origin.host}/${name}`, tag: `${origin.host}/${name}:${tag}` };
      store.putBuffer('manifest', digest, body, mediaType, from).catch((err: Error) => log.warn({ digest, error: err.message }, 'storing manifest failed'));
    });
  };
  await passThrough(upstream, origin, req, res, record, { observe });
}
