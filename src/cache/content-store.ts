// The content-addressed store: a cacache directory whose entries are keyed "<kind>/<digest>" and whose
// content files are shared between entries with the same bytes (one copy, whatever the repository).
// Fills are spooled to our own file and moved into cacache's content layout once their digest is
// verified (see docs/decisions.md: one disk write per byte instead of two).
import crypto from 'node:crypto';
import fs from 'node:fs/promises';
import { createRequire } from 'node:module';
import path from 'node:path';
import cacache from 'cacache';

const require = createRequire(import.meta.url);
// cacache's own content-path function, so our moves land exactly where its readers and verify look.
const contentPath = require('cacache/lib/content/path.js') as (cache: string, integrity: string) => string;

export type ContentKind = 'blob' | 'manifest';

export interface StoredContent {
  path: string;
  size: number;
  mediaType: string;
  digest: string;
}

interface EntryMetadata {
  mediaType?: string;
  digest?: string;
}

export class ContentStore {
  readonly spoolDir: string;
  // Writes not yet on disk: a lookup for the same entry waits for them instead of missing.
  private readonly pending = new Map<string, Promise<void>>();

  constructor(readonly dir: string) {
    this.spoolDir = path.join(dir, 'spool');
  }

  /** Creates the directories and removes spool files left by a crash: they were never committed. */
  async init(): Promise<void> {
    await fs.mkdir(this.dir, { recursive: true });
    await fs.rm(this.spoolDir, { recursive: true, force: true });
    await fs.mkdir(this.spoolDir, { recursive: true });
  }

  async lookup(kind: ContentKind, digest: string): Promise<StoredContent | null> {
    await this.pending.get(entryKey(kind, digest))?.catch(() => undefined);
    const info = await cacache.get.info(this.dir, entryKey(kind, digest));
    if (!info) return null;
    try {
      const stat = await fs.stat(info.path);
      const metadata = (info.metadata ?? {}) as EntryMetadata;
      return { path: info.path, size: stat.size, mediaType: metadata.mediaType ?? 'application/octet-stream', digest };
    } catch {
      return null; // the entry outlived its content (removed by hand or by verify): a miss
    }
  }

  newSpoolFile(): string {
    return path.join(this.spoolDir, `fill-${crypto.randomUUID()}`);
  }

  /** Moves a verified spool file into the store and records the entry. */
  async commitFile(spoolFile: string, kind: ContentKind, digest: string, size: number, mediaType: string): Promise<void> {
    const integrity = integrityOf(digest);
    const target = contentPath(this.dir, integrity);
    await fs.mkdir(path.dirname(target), { recursive: true });
    await fs.rename(spoolFile, target); // same filesystem; replaces identical bytes if already present
    await this.insert(kind, digest, size, mediaType);
  }

  /** Stores a small verified body (a manifest) through cacache, which re-checks the integrity. */
  putBuffer(kind: ContentKind, digest: string, data: Buffer, mediaType: string): Promise<void> {
    const key = entryKey(kind, digest);
    const write = cacache
      .put(this.dir, key, data, {
        integrity: integrityOf(digest),
        algorithms: ['sha256'],
        metadata: { mediaType, digest } satisfies EntryMetadata,
      })
      .then(() => undefined)
      .finally(() => {
        if (this.pending.get(key) === write) this.pending.delete(key);
      });
    this.pending.set(key, write);
    return write;
  }

  private async insert(kind: ContentKind, digest: string, size: number, mediaType: string): Promise<void> {
    await cacache.index.insert(this.dir, entryKey(kind, digest), integrityOf(digest), {
      size,
      metadata: { mediaType, digest } satisfies EntryMetadata,
    });
  }
}

function entryKey(kind: ContentKind, digest: string): string {
  return `${kind}/${digest}`;
}

/** "sha256:<hex>" -> the SRI string cacache keys content by. Only sha256 digests are cached. */
export function integrityOf(digest: string): string {
  const hex = digest.slice('sha256:'.length);
  return 'sha256-' + Buffer.from(hex, 'hex').toString('base64');
}
