// The `regcache cache` operations (ls, du, rm, prune, verify) on an open store. The same code runs in the
// server (asked over the control socket) and in the CLI (when no server holds the cache directory).
import crypto from 'node:crypto';
import { createReadStream } from 'node:fs';
import fs from 'node:fs/promises';
import path from 'node:path';
import { parseImageReference } from '../registry/image-reference.js';
import { displayReference, registryDisplayName } from '../registry/registry-name.js';
import type { ContentStore } from './content-store.js';
import type { Entry, EntryKind } from './entry-index.js';

export interface ListedEntry {
  kind: EntryKind;
  digest: string;
  size: number;
  mediaType: string;
  lastAccess: string;
  created: string;
  repositories: string[]; // as shown: Docker Hub as docker.io
  tags: string[];
}

export interface Usage {
  totalBytes: number;
  entries: number;
  maxBytes: number;
  registries: Record<string, { bytes: number; entries: number }>; // an entry counts once in each registry that requested it
}

export interface RemovalReport {
  removed: number;
  bytes: number;
}

export interface VerifyReport {
  checked: number;
  corrupt: string[];
  missing: string[];
  orphans: number;
  bytesFreed: number;
}

export class CacheAdminError extends Error {
  override name = 'CacheAdminError';
}

export class CacheAdmin {
  constructor(
    private readonly store: ContentStore,
    private readonly maxBytes: number,
  ) {}

  /** One command as the CLI or the control socket names it. */
  run(cmd: string, args: Record<string, unknown>): Promise<unknown> {
    const text = (name: string): string | undefined => (typeof args[name] === 'string' ? (args[name] as string) : undefined);
    const num = (name: string): number | null => (typeof args[name] === 'number' ? (args[name] as number) : null);
    switch (cmd) {
      case 'ls':
        return Promise.resolve(this.ls(text('registry')));
      case 'du':
        return Promise.resolve(this.du());
      case 'rm':
        return this.rm(text('target') ?? '');
      case 'prune':
        return this.prune(num('olderThanMs'), num('toBytes'));
      case 'verify':
        return this.verify();
      default:
        return Promise.reject(new CacheAdminError(`unknown cache command ${JSON.stringify(cmd)}`));
    }
  }

  ls(registry?: string): ListedEntry[] {
    const wanted = registry === undefined ? undefined : registryDisplayName(registry);
    const rows: ListedEntry[] = [];
    for (const e of this.store.index.oldestFirst()) {
      if (wanted && !e.refs.some((r) => registryDisplayName(registryOf(r)) === wanted)) continue;
      rows.push({
        kind: e.kind,
        digest: e.digest,
        size: e.size,
        mediaType: e.mediaType,
        lastAccess: new Date(e.lastAccess).toISOString(),
        created: new Date(e.created).toISOString(),
        repositories: [...new Set(e.refs.map(displayReference))].sort(),
        tags: e.tags.map(displayReference).sort(),
      });
    }
    return rows.reverse(); // most recently used first
  }

  du(): Usage {
    const registries: Usage['registries'] = {};
    for (const e of this.store.index.oldestFirst()) {
      for (const reg of new Set(e.refs.map((r) => registryDisplayName(registryOf(r))))) {
        const r = (registries[reg] ??= { bytes: 0, entries: 0 });
        r.bytes += e.size;
        r.entries++;
      }
    }
    return { totalBytes: this.store.index.totalBytes, entries: this.store.index.size, maxBytes: this.maxBytes, registries };
  }

  /**
   * `sha256:...`: that content, whatever refers to it. An image reference: its manifest(s), and each blob
   * that no other repository uses.
   */
  async rm(target: string): Promise<RemovalReport> {
    if (/^sha256:[a-f0-9]{64}$/.test(target)) {
      return this.removeAll([this.store.index.get('blob', target), this.store.index.get('manifest', target)]);
    }
    const ref = parseImageReference(target);
    const repo = `${ref.registry}/${ref.repository}`;
    const root = ref.digest ? this.store.index.get('manifest', ref.digest) : this.store.index.taggedManifest(`${repo}:${ref.tag}`);
    if (!root) throw new CacheAdminError(`${target} is not in the cache (as ${repo}${ref.digest ? '@' + ref.digest : ':' + ref.tag})`);
    const manifests = [root, ...(await this.childManifests(root))];
    const doomed: Entry[] = [...manifests];
    for (const m of manifests) {
      for (const digest of await this.blobsOf(m)) {
        const blob = this.store.index.get('blob', digest);
        if (blob && blob.refs.every((r) => r === repo)) doomed.push(blob);
      }
    }
    return this.removeAll(doomed);
  }

  /** Entries unused for olderThanMs, then least recently used ones until the total is at most toBytes. */
  async prune(olderThanMs: number | null, toBytes: number | null): Promise<RemovalReport> {
    const index = this.store.index;
    const cutoff = olderThanMs === null ? null : Date.now() - olderThanMs;
    const doomed: Entry[] = [];
    let total = index.totalBytes;
    for (const e of index.oldestFirst()) {
      const old = cutoff !== null && e.lastAccess < cutoff;
      const over = toBytes !== null && total > toBytes;
      if (!old && !over) break; // oldest first: nothing newer qualifies either
      doomed.push(e);
      total -= e.size;
    }
    return this.removeAll(doomed);
  }

  /** Re-hashes every content file; removes corrupt or missing entries and files no entry refers to. */
  async verify(): Promise<VerifyReport> {
    const report: VerifyReport = { checked: 0, corrupt: [], missing: [], orphans: 0, bytesFreed: 0 };
    for (const e of [...this.store.index.oldestFirst()]) {
      report.checked++;
      const file = this.store.contentPath(e.digest);
      let actual: string;
      try {
        actual = await sha256File(file);
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
        report.missing.push(e.digest);
        await this.store.index.delete(e.kind, e.digest);
        continue;
      }
      if (actual !== e.digest) {
        report.corrupt.push(e.digest);
        report.bytesFreed += e.size;
        await this.store.remove(e.kind, e.digest);
      }
    }
    const known = new Set<string>();
    for (const e of this.store.index.oldestFirst()) known.add(this.store.contentPath(e.digest));
    for (const file of await listFiles(path.join(this.store.dir, 'content-v2'))) {
      if (known.has(file)) continue;
      report.orphans++;
      report.bytesFreed += (await fs.stat(file).catch(() => null))?.size ?? 0;
      await fs.rm(file, { force: true });
    }
    return report;
  }

  private async removeAll(entries: (Entry | undefined)[]): Promise<RemovalReport> {
    const report: RemovalReport = { removed: 0, bytes: 0 };
    for (const e of entries) {
      if (!e || !(await this.store.remove(e.kind, e.digest))) continue;
      report.removed++;
      report.bytes += e.size;
    }
    return report;
  }

  private async readManifest(e: Entry): Promise<Record<string, unknown> | null> {
    try {
      return JSON.parse(await fs.readFile(this.store.contentPath(e.digest), 'utf8')) as Record<string, unknown>;
    } catch {
      return null;
    }
  }

  private async childManifests(e: Entry): Promise<Entry[]> {
    const doc = await this.readManifest(e);
    const children = Array.isArray(doc?.manifests) ? (doc.manifests as { digest?: unknown }[]) : [];
    return children.map((c) => (typeof c.digest === 'string' ? this.store.index.get('manifest', c.digest) : undefined)).filter((c): c is Entry => c !== undefined);
  }

  private async blobsOf(e: Entry): Promise<string[]> {
    const doc = await this.readManifest(e);
    const descriptors = [doc?.config, ...(Array.isArray(doc?.layers) ? doc.layers : [])] as { digest?: unknown }[];
    return descriptors.map((d) => d?.digest).filter((d): d is string => typeof d === 'string');
  }
}

function registryOf(ref: string): string {
  return ref.slice(0, ref.indexOf('/'));
}

async function sha256File(file: string): Promise<string> {
  const hash = crypto.createHash('sha256');
  for await (const chunk of createReadStream(file, { highWaterMark: 1024 * 1024 })) hash.update(chunk as Buffer);
  return 'sha256:' + hash.digest('hex');
}

async function listFiles(dir: string): Promise<string[]> {
  const entries = await fs.readdir(dir, { withFileTypes: true, recursive: true }).catch(() => []);
  return entries.filter((d) => d.isFile()).map((d) => path.join(d.parentPath ?? (d as unknown as { path: string }).path, d.name));
}
