import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';

/** Create a fresh private directory under os.tmpdir(), e.g. /tmp/<prefix>-XXXXXX. */
export async function makeTmpDir(prefix: string): Promise<string> {
  const safe = prefix.replace(/[^A-Za-z0-9._-]/g, '_');
  return mkdtemp(path.join(os.tmpdir(), `${safe}-`));
}

/**
 * Remove a directory tree; missing dirs are fine. Refuses to touch anything
 * outside os.tmpdir() so a bad path in a test can never wipe real data.
 */
export async function removeTmpDir(dir: string): Promise<void> {
  const root = path.resolve(os.tmpdir());
  const target = path.resolve(dir);
  if (!target.startsWith(root + path.sep)) {
    throw new Error(`removeTmpDir: refusing to remove ${target} (not under ${root})`);
  }
  await rm(target, { recursive: true, force: true, maxRetries: 3 });
}

/**
 * Collects temp dirs made during a test so one after() hook can remove them
 * all, even when the test failed half-way.
 */
export class TmpDirs {
  private readonly dirs: string[] = [];

  async make(prefix: string): Promise<string> {
    const dir = await makeTmpDir(prefix);
    this.dirs.push(dir);
    return dir;
  }

  /** Set REGCACHE_KEEP_TMP=1 to keep the dirs (logs, configs) for debugging. */
  async cleanup(): Promise<void> {
    const dirs = this.dirs.splice(0).reverse();
    if (process.env.REGCACHE_KEEP_TMP === '1') {
      for (const dir of dirs) process.stderr.write(`keeping ${dir}\n`);
      return;
    }
    for (const dir of dirs) await removeTmpDir(dir);
  }
}
