import { createReadStream } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { Agent, request, type Dispatcher } from 'undici';
import type { BlobFile, Image, ImageIndex } from './images.js';

export interface PushOptions {
  /** PEM CA file that signed the registry's certificate. */
  caFile: string;
  /** Bearer token (e.g. TokenServer.mintToken) for token-auth registries. */
  token?: string;
  /** "user:password" for registries with htpasswd (Basic) auth. */
  basic?: string;
}

/** One undici Agent per push, trusting only the test CA. */
interface Client {
  base: string;
  dispatcher: Agent;
  headers: Record<string, string>;
}

async function openClient(registryBaseUrl: string, opts: PushOptions): Promise<Client> {
  const ca = await readFile(opts.caFile, 'utf8');
  const headers: Record<string, string> = {};
  if (opts.token !== undefined) headers.authorization = `Bearer ${opts.token}`;
  if (opts.basic !== undefined) headers.authorization = `Basic ${Buffer.from(opts.basic).toString('base64')}`;
  return { base: registryBaseUrl.replace(/\/+$/, ''), dispatcher: new Agent({ connect: { ca } }), headers };
}

type RequestOptions = Omit<Dispatcher.RequestOptions, 'origin' | 'path' | 'method'> & { method: Dispatcher.HttpMethod };

async function call(client: Client, url: string, init: RequestOptions): Promise<Dispatcher.ResponseData> {
  const absolute = new URL(url, client.base + '/').toString();
  return request(absolute, {
    ...init,
    dispatcher: client.dispatcher,
    headers: { ...client.headers, ...(init.headers as Record<string, string> | undefined) },
  });
}

async function expectStatus(res: Dispatcher.ResponseData, ok: number[], what: string): Promise<void> {
  const text = await res.body.text();
  if (!ok.includes(res.statusCode)) throw new Error(`${what}: HTTP ${res.statusCode} ${text.slice(0, 500)}`);
}

function header(res: Dispatcher.ResponseData, name: string): string | undefined {
  const v = res.headers[name];
  return Array.isArray(v) ? v[0] : v;
}

/** Monolithic upload (POST then PUT ?digest=), streamed from the file; skipped if the blob exists. */
async function pushBlobWith(client: Client, repo: string, blob: BlobFile): Promise<void> {
  const head = await call(client, `/v2/${repo}/blobs/${blob.digest}`, { method: 'HEAD' });
  await head.body.text();
  if (head.statusCode === 200) return;

  const start = await call(client, `/v2/${repo}/blobs/uploads/`, { method: 'POST', headers: { 'content-length': '0' } });
  await expectStatus(start, [202], `start upload ${repo}@${blob.digest}`);
  const location = header(start, 'location');
  if (location === undefined) throw new Error('start upload: no Location header');
  const sep = location.includes('?') ? '&' : '?';
  const put = await call(client, `${location}${sep}digest=${encodeURIComponent(blob.digest)}`, {
    method: 'PUT',
    headers: { 'content-type': 'application/octet-stream', 'content-length': String(blob.size) },
    body: createReadStream(blob.file),
  });
  await expectStatus(put, [201], `upload ${repo}@${blob.digest}`);
}

async function pushManifestWith(client: Client, repo: string, reference: string, manifest: Buffer, mediaType: string): Promise<void> {
  const res = await call(client, `/v2/${repo}/manifests/${reference}`, {
    method: 'PUT',
    headers: { 'content-type': mediaType },
    body: manifest,
  });
  await expectStatus(res, [201], `put manifest ${repo}:${reference}`);
}

async function pushImageWith(client: Client, repo: string, reference: string, image: Image): Promise<void> {
  for (const blob of [...image.layers, image.config]) await pushBlobWith(client, repo, blob);
  await pushManifestWith(client, repo, reference, image.manifest, image.manifestMediaType);
}

/** Push blobs and manifest via the distribution API; the manifest is tagged `tag`. */
export async function pushImage(registryBaseUrl: string, repo: string, tag: string, image: Image, opts: PushOptions): Promise<void> {
  const client = await openClient(registryBaseUrl, opts);
  try {
    await pushImageWith(client, repo, tag, image);
  } finally {
    await client.dispatcher.close();
  }
}

/** Push each child image by digest, then the index/manifest list under `tag`. */
export async function pushIndex(registryBaseUrl: string, repo: string, tag: string, index: ImageIndex, opts: PushOptions): Promise<void> {
  const client = await openClient(registryBaseUrl, opts);
  try {
    for (const image of index.images) await pushImageWith(client, repo, image.manifestDigest, image);
    await pushManifestWith(client, repo, tag, index.manifest, index.manifestMediaType);
  } finally {
    await client.dispatcher.close();
  }
}
