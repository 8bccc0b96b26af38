// `regcache prefetch <image>...`: warms the cache by pulling through the running server's mirror
// listener, so the bytes take exactly the path a client's pull takes (fill, verify, store). The server
// is found over CACHE_DIR's control socket, which also says where the mirror listens and which blobs
// are already stored (those are not downloaded again). Every platform of a multi-platform image unless
// --platform narrows it. A mirror that asks for credentials (MIRROR_AUTH, or PROXY_AUTH's users) gets
// those of --user, or of the --mirror URL.
import type { Command } from 'commander';
import type { Dispatcher } from 'undici';
import { askControl, controlSocketPath } from '../admin/control-socket.js';
import { askServerPorts } from '../admin/server-ports.js';
import { fail } from './exit.js';
import { configOrFail } from './config-or-fail.js';
import { formatBytes } from '../telemetry/format-bytes.js';
import { parseImageReference, type ImageReference } from '../reference/image-reference.js';
import { registryDisplayName } from '../reference/registry-name.js';
import { TransferProgress } from './transfer-progress.js';
import { errorMessage } from '../telemetry/error-message.js';

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

interface Mirror {
  base: string; // scheme://host:port, no credentials
  headers: Record<string, string>; // Authorization, when credentials were given
  dispatcher: Dispatcher | undefined;
  cacheDir: string | null; // the server's cache, asked what it holds; null: a mirror given by URL
  manifestMaxBytes: number; // MANIFEST_MAX_SIZE: a manifest is read into memory up to this, never more
}

// undici is loaded when a pull begins, not with the command line: every other command and --help would
// pay for it.
const http = () => import('undici');

type Image = ImageReference & { image: string };

export function addPrefetchCommand(program: Command): void {
  program
    .command('prefetch')
    .description("pull images into the cache through the running server's mirror listener (found over CACHE_DIR/control.sock)")
    .argument('<image...>', 'e.g. alpine:3.20, ghcr.io/org/app:v1')
    .option('--platform <os/arch[/variant]>', 'only this platform of multi-platform images, e.g. linux/amd64')
    .option('--cache-dir <dir>', "the running server's content store (CACHE_DIR, default ./data/cache)")
    .option(
      '--mirror <url>',
      "pull through this mirror instead of the local server's (what it already holds is then unknown here); user:password@ for one that asks for credentials",
    )
    .option('--user <user:password>', 'credentials for a mirror that asks for them (MIRROR_AUTH, else PROXY_AUTH users)')
    .addHelpText(
      'after',
      [
        '',
        'Examples:',
        '  $ regcache prefetch alpine:3.20 ghcr.io/org/app:v1',
        '  $ regcache prefetch --platform linux/arm64 node:22',
        '  $ regcache prefetch --cache-dir /docker_mirror_cache alpine:3.20',
        '  $ regcache prefetch --mirror http://regcache.internal:5000 alpine:3.20',
        '  $ regcache prefetch --user ci:secret alpine:3.20',
      ].join('\n'),
    )
    .action(async (images: string[], options: { platform?: string; cacheDir?: string; mirror?: string; user?: string }) => {
      const { cacheDir, manifestMaxSize } = configOrFail(options.cacheDir ? { cacheDir: options.cacheDir } : {});
      const refs = images.map((image) => {
        try {
          return { image, ...parseImageReference(image) };
        } catch (err) {
          fail(errorMessage(err), 2);
        }
      });
      const found = options.mirror ? givenMirror(options.mirror) : await localMirror(cacheDir);
      const mirror: Mirror = { ...found, manifestMaxBytes: manifestMaxSize };
      if (options.user !== undefined) mirror.headers = basicAuthorization(options.user);
      for (const ref of refs) {
        try {
          process.stdout.write(await prefetch(mirror, ref, options.platform));
        } catch (err) {
          fail(`${ref.image}: ${errorMessage(err)}`, 1);
        }
      }
      await mirror.dispatcher?.close();
    });
}

/** --mirror URL: its credentials, if any, become the Authorization header, never part of a logged URL. */
function givenMirror(text: string): Omit<Mirror, 'manifestMaxBytes'> {
  let url: URL;
  try {
    url = new URL(text);
  } catch {
    fail(`--mirror ${JSON.stringify(text.replace(/\/\/[^@/]*@/, '//***@'))} is not a URL, e.g. http://127.0.0.1:5000`, 2);
  }
  const credentials = url.username || url.password ? `${decodeURIComponent(url.username)}:${decodeURIComponent(url.password)}` : null;
  return {
    base: `${url.protocol}//${url.host}${url.pathname.replace(/\/+$/, '')}`,
    headers: credentials ? basicAuthorization(credentials) : {},
    dispatcher: undefined,
    cacheDir: null,
  };
}

function basicAuthorization(credentials: string): Record<string, string> {
  return { authorization: 'Basic ' + Buffer.from(credentials).toString('base64') };
}

/** The mirror of the server that holds cacheDir, or an exit that says how to get one. */
async function localMirror(cacheDir: string): Promise<Omit<Mirror, 'manifestMaxBytes'>> {
  let ports;
  try {
    ports = await askServerPorts(cacheDir);
  } catch (err) {
    fail(`the regcache server for CACHE_DIR=${cacheDir} did not say where it listens: ${errorMessage(err)}`, 1);
  }
  if (ports === null) {
    fail(
      `no regcache server is running for CACHE_DIR=${cacheDir} (nothing answers on ${controlSocketPath(cacheDir)}). ` +
        'prefetch pulls through the server: start it with this CACHE_DIR and the mirror on (regcache serve; MIRROR_PORT, default 5000, not 0), ' +
        'pass --cache-dir for another cache, or --mirror URL',
      1,
    );
  }
  if (ports.mirror === null) {
    fail(
      `the regcache server for CACHE_DIR=${cacheDir} runs with the mirror off (MIRROR_PORT=0), and prefetch pulls through the mirror: restart it with MIRROR_PORT set (default 5000), or pass --mirror URL`,
      1,
    );
  }
  const { port, tls } = ports.mirror;
  // A TLS mirror's certificate names MIRROR_HOSTNAME (or the operator's host), not 127.0.0.1. This is the
  // server that told us its port over its own 0600 socket, and the fill verifies every byte by digest.
  const dispatcher = tls ? new (await http()).Agent({ connect: { rejectUnauthorized: false } }) : undefined;
  return { base: `${tls ? 'https' : 'http'}://127.0.0.1:${port}`, headers: {}, dispatcher, cacheDir };
}

/** Pulls one image through the mirror; returns its summary line. */
async function prefetch(mirror: Mirror, ref: Image, platform: string | undefined): Promise<string> {
  const url = (kind: 'manifests' | 'blobs', id: string) =>
    `${mirror.base}/v2/${ref.repository}/${kind}/${id}?ns=${encodeURIComponent(registryDisplayName(ref.registry))}`;
  const root = await getManifest(mirror, url('manifests', ref.digest ?? ref.tag));
  const manifests: ManifestDoc[] = [];
  if (root.manifests) {
    const wanted = root.manifests.filter((m) => !platform || platformOf(m) === platform);
    if (wanted.length === 0) throw new Error(`no ${platform} platform in this image`);
    for (const child of wanted) manifests.push(await getManifest(mirror, url('manifests', child.digest)));
  } else {
    manifests.push(root);
  }
  const blobs = new Map<string, number | undefined>();
  for (const m of manifests) for (const d of [m.config, ...(m.layers ?? [])]) if (d?.digest) blobs.set(d.digest, d.size);

  const cached = mirror.cacheDir === null ? new Set<string>() : await present(mirror.cacheDir, [...blobs.keys()], ref.registry);
  const toFetch = [...blobs].filter(([digest]) => !cached.has(digest));
  const sizes = toFetch.map(([, size]) => size);
  const total = sizes.every((s) => s !== undefined) ? sizes.reduce<number>((n, s) => n + s!, 0) : null;
  const progress = new TransferProgress(process.stderr, ref.image, total, toFetch.length);
  let fetched = 0;
  try {
    for (const [digest] of toFetch) {
      const res = await (await http()).request(url('blobs', digest), { headers: mirror.headers, dispatcher: mirror.dispatcher });
      if (res.statusCode !== 200) {
        await res.body.dump();
        throw new Error(`blob ${digest}: the mirror answered ${res.statusCode}`);
      }
      for await (const chunk of res.body) {
        fetched += (chunk as Buffer).length;
        progress.add((chunk as Buffer).length);
      }
      progress.itemDone();
    }
  } finally {
    progress.finish();
  }
  const manifestCount = count(manifests.length + (root.manifests ? 1 : 0), 'manifest');
  if (mirror.cacheDir === null)
    return `${ref.image}: ${count(toFetch.length, 'blob')} (${formatBytes(fetched)}) pulled through ${mirror.base}, ${manifestCount}\n`;
  const cachedBytes = [...cached].reduce((n, d) => n + (blobs.get(d) ?? 0), 0);
  return `${ref.image}: fetched ${count(toFetch.length, 'blob')} (${formatBytes(fetched)}), already cached ${cached.size} (${formatBytes(cachedBytes)}); ${manifestCount}\n`;
}

// A control request is at most 64 KiB: about 850 digests. Asked in batches well below that.
const DIGESTS_PER_REQUEST = 500;

/** The blobs the server would serve from its store for this registry. */
async function present(cacheDir: string, digests: string[], registry: string): Promise<Set<string>> {
  const found = new Set<string>();
  for (let i = 0; i < digests.length; i += DIGESTS_PER_REQUEST) {
    const answer = await askControl(cacheDir, { cmd: 'present', args: { digests: digests.slice(i, i + DIGESTS_PER_REQUEST), registry } });
    if (answer === null) throw new Error(`the regcache server for CACHE_DIR=${cacheDir} stopped`);
    if (!answer.ok) throw new Error(answer.error);
    for (const d of answer.result as string[]) found.add(d);
  }
  return found;
}

async function getManifest(mirror: Mirror, url: string): Promise<ManifestDoc> {
  const res = await (await http()).request(url, { headers: { accept: ACCEPT, ...mirror.headers }, dispatcher: mirror.dispatcher });
  const { readBounded } = await import('../upstream/bounded-body.js'); // with undici, which it uses
  const text = (await readBounded(res.body, mirror.manifestMaxBytes, `the manifest at ${new URL(url).pathname}`)).toString('utf8');
  if (res.statusCode === 401) throw new Error('the mirror asks for credentials (MIRROR_AUTH, else PROXY_AUTH users): pass them with --user user:password');
  if (res.statusCode !== 200) throw new Error(`${new URL(url).pathname}: the mirror answered ${res.statusCode} ${text.slice(0, 200)}`);
  return JSON.parse(text) as ManifestDoc;
}

function count(n: number, noun: string): string {
  return `${n} ${noun}${n === 1 ? '' : 's'}`;
}

function platformOf(d: Descriptor): string {
  const p = d.platform ?? {};
  return [p.os, p.architecture, p.variant].filter(Boolean).join('/');
}
