// The files of a store directory as any process working on it opens them: content files in cacache's
// content layout (one per digest, content-v2/sha256/ab/cd/<rest of the hex>; regcache owns that layout
// openly, decisions.md #101), spool files named in CACHE_DIR/spool (another process follows a fill by the
// name), the modes regcache creates them with, and the free space. Used by LocalStore (the process that
// owns the directory), WorkerStore (a worker process beside it) and S3Store (a bucket replica's spool
// files and local copies).
import crypto from 'node:crypto';
import fs from 'node:fs/promises';
import type { BigIntStats } from 'node:fs';
import path from 'node:path';
import type { ContentFile, DiskSpace, FileIdentity, Spool } from './content-store.js';
import { errorCode } from '../telemetry/error-message.js';

// Every directory regcache creates under CACHE_DIR; files are created 0600. Cached layers of private
// images are no business of other local users.
export const PRIVATE_DIR = 0o700;
// The index and the OS need some room too: 64 MiB, or 2% of a small filesystem.
const DISK_RESERVE_BYTES = 64 * 1024 * 1024;
const DISK_RESERVE_SHARE = 0.02;
// What a spool name looks like: fill-<prefix><uuid>, the prefix naming the worker that wrote it (if any).
const SPOOL_NAME = /^fill-[a-z0-9-]+$/;

/**
 * Where the content of "sha256:<hex>" lives under a store directory: cacache's layout (version 2, the
 * algorithm, then the hex cut 2/2/rest), so cacache's readers find it (a test reads it back through
 * cacache's public API). Only sha256 digests are cached.
 */
export function contentPath(dir: string, digest: string): string {
  const hex = digest.slice('sha256:'.length);
  return path.join(dir, 'content-v2', 'sha256', hex.slice(0, 2), hex.slice(2, 4), hex.slice(4));
}

export function spoolDirOf(dir: string): string {
  return path.join(dir, 'spool');
}

/** A new spool name; `prefix` marks the process that writes it (a worker's files are removed when it dies). */
export function newSpoolName(prefix = ''): string {
  return `fill-${prefix}${crypto.randomUUID()}`;
}

/** The path of a spool file by its name; throws for anything that is not a spool name (no path may sneak in). */
export function spoolPath(dir: string, name: string): string {
  if (!SPOOL_NAME.test(name)) throw new Error(`not a spool file name: ${JSON.stringify(name)}`);
  return path.join(spoolDirOf(dir), name);
}

/** Creates a spool file for a fill (0600, must not exist yet). */
export async function createSpool(dir: string, name: string): Promise<SpoolFile> {
  const file = spoolPath(dir, name);
  return new SpoolFile(name, file, await fs.open(file, 'wx+', 0o600));
}

/** Opens another process's spool file to read it while it grows; null when it is gone (committed or dropped). */
export async function followSpool(dir: string, name: string): Promise<SpoolFile | null> {
  const file = spoolPath(dir, name);
  try {
    return new SpoolFile(name, file, await fs.open(file, 'r'));
  } catch (err) {
    if (errorCode(err) === 'ENOENT') return null;
    throw err;
  }
}

/**
 * Stores a small verified body (a manifest) at once rather than by a fill: written to the new spool file
 * `name`, synced, then handed to `commit`; the file is removed when any of that fails.
 */
export async function commitSmall(dir: string, name: string, data: Buffer, commit: (file: string) => Promise<unknown>): Promise<void> {
  const file = spoolPath(dir, name);
  const handle = await fs.open(file, 'wx', 0o600);
  try {
    try {
      await handle.writeFile(data);
      await handle.datasync();
    } finally {
      await handle.close();
    }
    await commit(file);
  } catch (err) {
    // A write that failed (ENOSPC: the disk filled) left the file as surely as a failed commit: no
    // running fill owns it, so nothing else would remove it before a restart (found by the soak).
    await fs.rm(file, { force: true });
    throw err;
  }
}

/**
 * Makes `dir` (CACHE_DIR) and its spool directory owner-only, whatever the umask or an earlier mode, and
 * empties the spool: files left there by a crash were never committed. The store that owns the directory
 * does this when it opens (a directory's, a bucket replica's), before any fill.
 */
export async function openSpoolDir(dir: string): Promise<void> {
  await fs.mkdir(dir, { recursive: true, mode: PRIVATE_DIR });
  await restrictToOwner(dir);
  const spoolDir = spoolDirOf(dir);
  await fs.rm(spoolDir, { recursive: true, force: true });
  await fs.mkdir(spoolDir, { mode: PRIVATE_DIR });
  await fs.chmod(spoolDir, PRIVATE_DIR); // ours: a umask may have narrowed the mode (never widened it)
}

/**
 * CACHE_DIR ends up 0700 even if it existed with a wider mode (e.g. created 0777 under umask 000 by an
 * earlier version). A directory owned by another user keeps the mode its owner chose (chmod: EPERM).
 */
async function restrictToOwner(dir: string): Promise<void> {
  try {
    await fs.chmod(dir, PRIVATE_DIR);
  } catch (err) {
    if (errorCode(err) !== 'EPERM') throw err;
  }
}

/** Opens stored content for reading; null when its file is gone. */
export async function openContent(dir: string, digest: string): Promise<ContentFile | null> {
  let handle: fs.FileHandle;
  try {
    handle = await fs.open(contentPath(dir, digest), 'r');
  } catch (err) {
    if (errorCode(err) === 'ENOENT') return null;
    throw err;
  }
  try {
    const stat = await handle.stat({ bigint: true });
    return new LocalFile(handle, Number(stat.size), identityOf(stat));
  } catch (err) {
    await handle.close();
    throw err;
  }
}

/** One statfs: bytes available to regcache, and the reserve (64 MiB, or 2% of a small filesystem). */
export async function diskSpace(dir: string): Promise<DiskSpace> {
  const s = await fs.statfs(dir);
  return { free: s.bavail * s.bsize, reserve: Math.min(DISK_RESERVE_BYTES, Math.floor(s.blocks * s.bsize * DISK_RESERVE_SHARE)) };
}

/** ContentFile.identity of a stat: what changes when the file or its inode is changed in any way. */
function identityOf(s: BigIntStats): FileIdentity {
  const contentKey = `${s.dev}:${s.ino}:${s.size}:${s.mtimeNs}`;
  return { key: `${contentKey}:${s.ctimeNs}`, changedMs: Number(s.ctimeMs), contentKey, linked: s.nlink > 0n };
}

/** A content file opened for reading. */
class LocalFile implements ContentFile {
  constructor(
    private readonly handle: fs.FileHandle,
    readonly size: number,
    readonly identity: FileIdentity,
  ) {}

  async restat(): Promise<FileIdentity> {
    return identityOf(await this.handle.stat({ bigint: true }));
  }

  read(buffer: Buffer, length: number, position: number): Promise<number> {
    return this.handle.read(buffer, 0, length, position).then((r) => r.bytesRead);
  }

  close(): Promise<void> {
    return this.handle.close();
  }
}

/** A fill's spool file: written and read by position through one descriptor. */
export class SpoolFile implements Spool {
  constructor(
    readonly name: string,
    readonly file: string,
    private readonly handle: fs.FileHandle,
  ) {}

  write(chunks: Buffer[], position: number): Promise<number> {
    return this.handle.writev(chunks, position).then((r) => r.bytesWritten);
  }

  read(buffer: Buffer, length: number, position: number): Promise<number> {
    return this.handle.read(buffer, 0, length, position).then((r) => r.bytesRead);
  }

  sync(): Promise<void> {
    return this.handle.datasync();
  }

  close(): Promise<void> {
    return this.handle.close();
  }
}
