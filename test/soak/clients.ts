// The soak's clients: a bounded pool of node clients (undici, through regcache's proxy port by CONNECT
// with regcache's CA, or plain HTTP to a mirror port) and skopeo, pulling the catalogue's images and
// blobs, some Range reads, some clients that stop reading mid-body, private images with and without
// credentials (the token dance against the test token server, as Docker does). Every answer is checked as
// it completes: a complete body must be the bytes its digest names (a Range: the bytes of that range), and
// private content must never reach a client without access. Checks are counted; a failure is kept whole.
import crypto from 'node:crypto';
import { readFileSync } from 'node:fs';
import { readdir, readFile, rm } from 'node:fs/promises';
import path from 'node:path';
import { Agent, ProxyAgent, request, type Dispatcher } from 'undici';
import { runSkopeo } from '../harness/skopeo.js';
import type { Catalogue, Item } from './catalogue.js';
import type { Rng } from './rng.js';

export interface Target {
  name: string; // e.g. local-proxy, fleet-mirror
  config: 'local' | 'fleet';
  kind: 'proxy' | 'mirror';
  /** proxy: http://127.0.0.1:PORT (HTTPS_PROXY); mirror: http://127.0.0.1:PORT */
  url: string;
  caFile: string; // regcache's CA for this configuration
}

export type Op = 'image' | 'blob' | 'manifest' | 'range' | 'abandon' | 'private-creds' | 'private-anonymous' | 'private-elsewhere' | 'skopeo';

export interface Outcome {
  at: number;
  target: string;
  op: Op;
  status: number;
  bytes: number;
  ms: number;
  /** Why it failed, when it did: status-503, cut, refused, timeout, ... (an error is allowed). */
  error: string | null;
}

export interface Violation {
  at: number;
  invariant: 'wrong-bytes' | 'private-leak';
  target: string;
  op: Op;
  detail: string;
}

export class Ledger {
  readonly outcomes: Outcome[] = [];
  readonly violations: Violation[] = [];
  /** Told of each violation as it is found (the soak logs it at once). */
  onViolation: (v: Violation) => void = () => undefined;
  readonly checks = { bytes: 0, privacy: 0 };
  /** Digests clients asked for lately, newest last: what a `cache rm` fault aims at (content being filled or just stored). */
  readonly recent: Record<Target['config'], string[]> = { local: [], fleet: [] };
  bytes = 0;

  asked(config: Target['config'], digest: string): void {
    const recent = this.recent[config];
    recent.push(digest);
    if (recent.length > 64) recent.shift();
  }

  violation(v: Violation): void {
    this.violations.push(v);
    this.onViolation(v);
  }

  note(o: Outcome): void {
    this.outcomes.push(o);
    this.bytes += o.bytes;
  }
}

export const USER = 'soak';
export const PASSWORD = 'soak-pass';
// A client's limits, each over twice the slowest answer a fault explains (a gateway paused past the bucket's
// two 10 s attempts: about 20 s): one reached is a request regcache left unanswered (the soak judges it).
const REQUEST_TIMEOUT_MS = 60_000;
const SKOPEO_TIMEOUT_MS = 180_000;
/** A failure that is a client giving up on an answer that never came. */
export const GAVE_UP = new Set(['timeout', 'skopeo-timeout']);
const MANIFEST_TYPES = [
  'application/vnd.docker.distribution.manifest.v2+json',
  'application/vnd.docker.distribution.manifest.list.v2+json',
  'application/vnd.oci.image.manifest.v1+json',
  'application/vnd.oci.image.index.v1+json',
].join(', ');

interface Answer {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  body: Buffer | null; // null: not read whole (abandoned)
  hashed: string; // sha256 of what was read
  bytes: number;
}

/** One client of the pool: its own connections to each target, its own tokens. */
export class NodeClient {
  private readonly dispatchers = new Map<string, Dispatcher>();
  private readonly tokens = new Map<string, string>();

  constructor(
    private readonly catalogue: Catalogue,
    private readonly ledger: Ledger,
    private readonly rng: Rng,
    private readonly service: string,
    private readonly deadline = Infinity, // the load's end: an image pull stops between its blobs there
  ) {}

  async close(): Promise<void> {
    await Promise.all([...this.dispatchers.values()].map((d) => d.destroy().catch(() => undefined)));
  }

  /** One operation, chosen by the caller. Never throws: failures are outcomes. */
  async run(target: Target, op: Exclude<Op, 'skopeo'>, item: Item, publicItem: Item): Promise<void> {
    const started = Date.now();
    let status = 0;
    let bytes = 0;
    try {
      switch (op) {
        case 'image': {
          const m = await this.get(target, item, `manifests/${item.tag}`, true, {});
          ({ status, bytes } = m);
          if (this.settle(target, op, item, m, item.image.manifestDigest, true)) {
            for (const digest of item.blobs) {
              // Past the load's end the rest of the image would only make the soak wait (each GET is checked whole).
              if (Date.now() >= this.deadline) break;
              const b = await this.get(target, item, `blobs/${digest}`, true, {});
              bytes += b.bytes;
              status = b.status;
              if (!this.settle(target, op, item, b, digest, true)) break;
            }
          }
          break;
        }
        case 'blob':
        case 'manifest': {
          const digest = op === 'blob' ? this.rng.pick(item.blobs) : item.image.manifestDigest;
          const a = await this.get(target, item, `${op === 'blob' ? 'blobs' : 'manifests'}/${digest}`, true, {});
          ({ status, bytes } = a);
          this.settle(target, op, item, a, digest, true);
          break;
        }
        case 'range': {
          const digest = this.rng.pick(item.blobs);
          const size = this.catalogue.blobs.get(digest)!.size;
          const start = this.rng.int(size);
          const end = Math.min(size - 1, start + this.rng.between(1, 256 * 1024));
          const a = await this.get(target, item, `blobs/${digest}`, true, { range: `bytes=${start}-${end}` });
          ({ status, bytes } = a);
          await this.settleRange(target, a, digest, start, end);
          break;
        }
        case 'abandon': {
          const digest = this.rng.pick(item.blobs);
          const a = await this.get(target, item, `blobs/${digest}`, true, { abandonAfter: this.rng.between(1, 64 * 1024) });
          ({ status, bytes } = a);
          this.settle(target, op, item, a, digest, true);
          break;
        }
        case 'private-creds':
        case 'private-anonymous': {
          // Through a mirror nobody has access (it drops the client's credentials).
          const access = op === 'private-creds' && target.kind === 'proxy';
          const digest = this.rng.chance(0.3) ? item.image.manifestDigest : this.rng.pick(item.blobs);
          const kind = digest === item.image.manifestDigest ? 'manifests' : 'blobs';
          const a = await this.get(target, item, `${kind}/${digest}`, access, {});
          ({ status, bytes } = a);
          this.settle(target, op, item, a, digest, access);
          break;
        }
        case 'private-elsewhere': {
          // A private digest under a public repository the client may read: still no access to it.
          const digest = this.rng.pick(item.blobs);
          const a = await this.get(target, publicItem, `blobs/${digest}`, false, {});
          ({ status, bytes } = a);
          this.settle(target, op, item, a, digest, false);
          break;
        }
      }
      this.ledger.note({
        at: started,
        target: target.name,
        op,
        status,
        bytes,
        ms: Date.now() - started,
        error: status >= 200 && status < 300 ? null : `status-${status}`,
      });
    } catch (err) {
      this.ledger.note({ at: started, target: target.name, op, status, bytes, ms: Date.now() - started, error: errorKind(err) });
    }
  }

  /**
   * Checks a complete answer for `digest`: its bytes hash to it, and private content only with access.
   * False when the caller should stop (not a 200).
   */
  private settle(target: Target, op: Op, item: Item, a: Answer, digest: string, access: boolean): boolean {
    const ok = a.status === 200;
    if (item.private) {
      this.ledger.checks.privacy++;
      if (!access && (ok || a.status === 206) && a.bytes > 0)
        this.ledger.violation({
          at: Date.now(),
          invariant: 'private-leak',
          target: target.name,
          op,
          detail: `${digest} of ${item.repo}: ${a.status}, ${a.bytes} bytes`,
        });
    }
    if (ok && a.body !== null) {
      this.ledger.checks.bytes++;
      if (a.hashed !== digest)
        this.ledger.violation({ at: Date.now(), invariant: 'wrong-bytes', target: target.name, op, detail: `${digest}: got ${a.hashed}, ${a.bytes} bytes` });
    }
    return ok;
  }

  private async settleRange(target: Target, a: Answer, digest: string, start: number, end: number): Promise<void> {
    if (a.body === null || (a.status !== 206 && a.status !== 200)) return;
    this.ledger.checks.bytes++;
    const expected = a.status === 206 ? await this.catalogue.slice(digest, start, end) : null;
    const right = expected ? a.body.equals(expected) : a.hashed === digest;
    if (!right)
      this.ledger.violation({
        at: Date.now(),
        invariant: 'wrong-bytes',
        target: target.name,
        op: 'range',
        detail: `${digest} ${start}-${end}: ${a.status}, ${a.bytes} bytes differ`,
      });
  }

  /** A GET of /v2/<repo>/<rest>; through a proxy with the token dance (with credentials when `access`). */
  private async get(target: Target, item: Item, rest: string, access: boolean, opts: { range?: string; abandonAfter?: number }): Promise<Answer> {
    // As Docker and containerd ask: without it docker-registry converts a tag's manifest to a schema 1 one, signed anew each time.
    const digest = /(sha256:[0-9a-f]{64})$/.exec(rest)?.[1];
    if (digest) this.ledger.asked(target.config, digest);
    const headers: Record<string, string> = rest.startsWith('manifests/') ? { accept: MANIFEST_TYPES } : {};
    if (opts.range) headers.range = opts.range;
    if (target.kind === 'mirror') return this.fetch(target, `${target.url}/v2/${item.repo}/${rest}?ns=registry.test`, headers, opts.abandonAfter);
    const url = `https://registry.test/v2/${item.repo}/${rest}`;
    const tokenKey = `${target.config}|${item.repo}|${access}`;
    const token = this.tokens.get(tokenKey);
    if (token) {
      const first = await this.fetch(target, url, { ...headers, authorization: `Bearer ${token}` }, opts.abandonAfter);
      if (first.status !== 401) return first;
    }
    const challenge = token ? null : await this.fetch(target, url, headers, opts.abandonAfter);
    if (challenge && challenge.status !== 401) return challenge;
    const fresh = await this.token(target, item.repo, access);
    this.tokens.set(tokenKey, fresh);
    return this.fetch(target, url, { ...headers, authorization: `Bearer ${fresh}` }, opts.abandonAfter);
  }

  private async token(target: Target, repo: string, access: boolean): Promise<string> {
    const headers: Record<string, string> = access ? { authorization: 'Basic ' + Buffer.from(`${USER}:${PASSWORD}`).toString('base64') } : {};
    const url = `https://auth.test/token?service=${encodeURIComponent(this.service)}&scope=repository:${repo}:pull`;
    const answer = await this.fetch(target, url, headers);
    if (answer.status !== 200 || !answer.body) throw Object.assign(new Error(`token: ${answer.status}`), { kind: `token-${answer.status}` });
    return (JSON.parse(answer.body.toString()) as { token: string }).token;
  }

  private async fetch(target: Target, url: string, headers: Record<string, string>, abandonAfter?: number): Promise<Answer> {
    const res = await request(url, { dispatcher: this.dispatcher(target), headers, signal: AbortSignal.timeout(REQUEST_TIMEOUT_MS) });
    const hash = crypto.createHash('sha256');
    const chunks: Buffer[] = [];
    let bytes = 0;
    for await (const chunk of res.body as AsyncIterable<Buffer>) {
      hash.update(chunk);
      chunks.push(chunk);
      bytes += chunk.length;
      if (abandonAfter !== undefined && bytes >= abandonAfter) {
        res.body.destroy(); // stops reading mid-body: regcache must cope
        return { status: res.statusCode, headers: res.headers, body: null, hashed: '', bytes };
      }
    }
    return { status: res.statusCode, headers: res.headers, body: Buffer.concat(chunks), hashed: 'sha256:' + hash.digest('hex'), bytes };
  }

  private dispatcher(target: Target): Dispatcher {
    let d = this.dispatchers.get(target.name);
    if (!d) {
      const timeouts = { headersTimeout: REQUEST_TIMEOUT_MS, bodyTimeout: 60_000 };
      d =
        target.kind === 'proxy'
          ? new ProxyAgent({ uri: target.url, requestTls: { ca: caPem(target.caFile) }, ...timeouts })
          : new Agent({ ...timeouts, connections: 4 });
      this.dispatchers.set(target.name, d);
    }
    return d;
  }
}

const caCache = new Map<string, string>();
/** regcache's CA, read at first use: one per configuration for the whole run (kept across restarts in CA_DIR). */
function caPem(file: string): string {
  let pem = caCache.get(file);
  if (!pem) caCache.set(file, (pem = readFileSync(file, 'utf8')));
  return pem;
}

/** skopeo pulls an image through a proxy port into a dir, and every file is checked against its digest. */
export async function skopeoPull(target: Target, item: Item, access: boolean, certDir: string, scratch: string, ledger: Ledger): Promise<void> {
  const started = Date.now();
  const out = path.join(scratch, `out-${started}-${Math.random().toString(36).slice(2)}`);
  const result = await runSkopeo(
    [
      'copy',
      '--retry-times',
      '0',
      '--src-cert-dir',
      certDir,
      ...(access ? ['--src-creds', `${USER}:${PASSWORD}`] : []),
      `docker://registry.test/${item.repo}:${item.tag}`,
      `dir:${out}`,
    ],
    { dir: scratch, env: { HTTPS_PROXY: target.url, NO_PROXY: '' }, timeoutMs: SKOPEO_TIMEOUT_MS },
  ).catch((err: Error) => ({ code: -1, stdout: '', stderr: err.message }));
  let bytes = 0;
  if (result.code === 0) {
    if (item.private && !access)
      ledger.violation({ at: started, invariant: 'private-leak', target: target.name, op: 'skopeo', detail: `${item.repo} pulled without credentials` });
    ledger.checks.privacy += item.private ? 1 : 0;
    const manifest = await readFile(path.join(out, 'manifest.json'));
    ledger.checks.bytes++;
    if (!manifest.equals(item.image.manifest))
      ledger.violation({ at: started, invariant: 'wrong-bytes', target: target.name, op: 'skopeo', detail: `${item.repo}: manifest differs` });
    for (const name of await readdir(out)) {
      if (!/^[0-9a-f]{64}$/.test(name)) continue;
      const data = await readFile(path.join(out, name));
      bytes += data.length;
      ledger.checks.bytes++;
      const got = crypto.createHash('sha256').update(data).digest('hex');
      if (got !== name)
        ledger.violation({ at: started, invariant: 'wrong-bytes', target: target.name, op: 'skopeo', detail: `${item.repo}: blob ${name} hashes to ${got}` });
    }
  } else if (item.private && !access) {
    ledger.checks.privacy++;
  }
  await rm(out, { recursive: true, force: true });
  ledger.note({
    at: started,
    target: target.name,
    op: 'skopeo',
    status: result.code === 0 ? 200 : 0,
    bytes,
    ms: Date.now() - started,
    error: result.code === 0 ? null : Date.now() - started >= SKOPEO_TIMEOUT_MS ? 'skopeo-timeout' : skopeoErrorKind(result.stderr),
  });
}

function skopeoErrorKind(stderr: string): string {
  if (/unauthorized|authentication required|denied/i.test(stderr)) return 'skopeo-denied';
  const status = /status(?: code)?:? (\d{3})|(\d{3}) (?:Service Unavailable|Bad Gateway|Internal Server Error|Gateway Timeout)/i.exec(stderr);
  if (status) return `skopeo-${status[1] ?? status[2]}`;
  if (/reset|EOF|broken pipe|connection refused|closed/i.test(stderr)) return 'skopeo-connection';
  if (/digest|does not match/i.test(stderr)) return 'skopeo-digest'; // skopeo refused a body: never a wrong body kept
  return 'skopeo-other';
}

function errorKind(err: unknown): string {
  const e = err as { kind?: string; code?: string; name?: string; cause?: { code?: string } };
  if (e.kind) return e.kind;
  if (e.name === 'TimeoutError' || e.code === 'UND_ERR_HEADERS_TIMEOUT' || e.code === 'UND_ERR_BODY_TIMEOUT') return 'timeout';
  const code = e.code ?? e.cause?.code;
  if (code === 'ECONNREFUSED' || code === 'UND_ERR_ABORTED') return 'refused';
  if (code === 'UND_ERR_SOCKET' || code === 'ECONNRESET' || code === 'EPIPE') return 'cut';
  if (code === 'UND_ERR_REQ_CONTENT_LENGTH_MISMATCH' || code === 'UND_ERR_RES_CONTENT_LENGTH_MISMATCH') return 'cut';
  return code ?? e.name ?? 'error';
}
