// `regcache prefetch <image>...`: warms the cache by pulling through the running server's mirror
// listener, so the bytes take exactly the path a client's pull takes (fill, verify, store). Every
// platform of a multi-platform image unless --platform narrows it. A mirror that asks for credentials
// (MIRROR_AUTH, or PROXY_AUTH's users) gets the ones in the --mirror URL.
import type { Command } from 'commander';
import { request } from 'undici';
import { parseImageReference } from './cache/cache-admin.js';
import { ConfigError, loadConfig } from './config.js';
import { fail } from './cli-exit.js';

const ACCEPT = [
  'application/vnd.oci.image.index.v1+json',
  'application/vnd.docker.distribution.manifest.list.v2+json',
  'application/vnd.oci.image.manifest.v1+json',
  'application/vnd.docker.distribution.manifest.v2+json',
].join(', ');

interface Descriptor {
  digest: string;
  size?: number;
  platform?: { os?: string; architecture?: string; variant?: string };
}

interface ManifestDoc {
  manifests?: Descriptor[];
  config?: Descriptor;
  layers?: Descriptor[];
}

export function addPrefetchCommand(program: Command): void {
  program
    .command('prefetch')
    .description('pull images into the cache through the running server (its mirror listener, MIRROR_PORT)')
    .argument('<image...>', 'e.g. alpine:3.20, ghcr.io/org/app:v1')
    .option('--platform <os/arch[/variant]>', 'only this platform of multi-platform images, e.g. linux/amd64')
    .option('--mirror <url>', 'the mirror to pull through, with user:password@ when it asks for credentials (default http://127.0.0.1:MIRROR_PORT)')
    .addHelpText('after', '\nExamples:\n  $ regcache prefetch alpine:3.20 ghcr.io/org/app:v1\n  $ regcache prefetch --platform linux/arm64 node:22\n  $ regcache prefetch --mirror http://ci:secret@127.0.0.1:5000 alpine:3.20')
    .action(async (images: string[], options: { platform?: string; mirror?: string }) => {
      let mirror = options.mirror;
      if (!mirror) {
        let port: number;
        try {
          port = loadConfig(process.env).mirrorPort;
        } catch (err) {
          if (err instanceof ConfigError) fail(err.message, 2);
          throw err;
        }
        if (port === 0) fail('prefetch pulls through the mirror listener, and MIRROR_PORT=0 turns it off (or pass --mirror URL)', 2);
        mirror = `http://127.0.0.1:${port}`;
      }
      const refs = images.map((image) => {
        try {
          return { image, ...parseImageReference(image) };
        } catch (err) {
          fail((err as Error).message, 2);
        }
      });
      let target: MirrorTarget;
      try {
        target = mirrorTarget(mirror);
      } catch {
        fail(`--mirror ${JSON.stringify(mirror.replace(/\/\/[^@/]*@/, '//***@'))} is not a URL, e.g. http://127.0.0.1:5000`, 2);
      }
      for (const ref of refs) {
        try {
          await prefetch(target, ref, options.platform);
        } catch (err) {
          fail(`${ref.image}: ${(err as Error).message}`, 1);
        }
      }
    });
}

interface MirrorTarget {
  base: string; // scheme://host:port, no credentials
  headers: Record<string, string>; // Authorization when the URL carried user:password
}

function mirrorTarget(mirror: string): MirrorTarget {
  const url = new URL(mirror);
  const user = decodeURIComponent(url.username);
  const password = decodeURIComponent(url.password);
  const headers: Record<string, string> = user || password ? { authorization: 'Basic ' + Buffer.from(`${user}:${password}`).toString('base64') } : {};
  return { base: `${url.protocol}//${url.host}${url.pathname.replace(/\/$/, '')}`, headers };
}

async function prefetch(mirror: MirrorTarget, ref: ReturnType<typeof parseImageReference> & { image: string }, platform: string | undefined): Promise<void> {
  const ns = ref.registry === 'registry-1.docker.io' ? 'docker.io' : ref.registry;
  const url = (kind: 'manifests' | 'blobs', id: string) => `${mirror.base}/v2/${ref.repository}/${kind}/${id}?ns=${encodeURIComponent(ns)}`;
  const getJson = (u: string) => getManifest(u, mirror.headers);
  const root = await getJson(url('manifests', ref.digest ?? ref.tag));
  const manifests: ManifestDoc[] = [];
  if (root.manifests) {
    const wanted = root.manifests.filter((m) => !platform || platformOf(m) === platform);
    if (wanted.length === 0) throw new Error(`no ${platform} platform in this image`);
    for (const child of wanted) manifests.push(await getJson(url('manifests', child.digest)));
  } else {
    manifests.push(root);
  }
  const blobs = new Map<string, number | undefined>();
  for (const m of manifests) for (const d of [m.config, ...(m.layers ?? [])]) if (d?.digest) blobs.set(d.digest, d.size);
  let i = 0;
  for (const [digest] of blobs) {
    const started = Date.now();
    const res = await request(url('blobs', digest), { headers: mirror.headers });
    let bytes = 0;
    for await (const chunk of res.body) bytes += (chunk as Buffer).length;
    if (res.statusCode !== 200) throw new Error(`blob ${digest}: the mirror answered ${res.statusCode}`);
    i++;
    if (process.stdout.isTTY) process.stdout.write(`${ref.image}  [${i}/${blobs.size}]  ${digest.slice(0, 19)}  ${(bytes / 1048576).toFixed(1)} MiB  ${Date.now() - started} ms\n`);
  }
  process.stdout.write(`${ref.image}: ${manifests.length} manifest(s), ${blobs.size} blob(s) cached\n`);
}

async function getManifest(url: string, headers: Record<string, string>): Promise<ManifestDoc> {
  const res = await request(url, { headers: { accept: ACCEPT, ...headers } });
  const text = await res.body.text();
  if (res.statusCode === 401) throw new Error(`the mirror asks for credentials: --mirror http://user:password@host:port (MIRROR_AUTH, else PROXY_AUTH users)`);
  if (res.statusCode !== 200) throw new Error(`${new URL(url).pathname}: the mirror answered ${res.statusCode} ${text.slice(0, 200)}`);
  return JSON.parse(text) as ManifestDoc;
}

function platformOf(d: Descriptor): string {
  const p = d.platform ?? {};
  return [p.os, p.architecture, p.variant].filter(Boolean).join('/');
}
