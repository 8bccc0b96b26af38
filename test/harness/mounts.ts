import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { run } from './proc.js';

/** Decode the octal escapes (\040 for space etc.) mountinfo uses in paths. */
function unescapeMountPath(p: string): string {
  return p.replace(/\\([0-7]{3})/g, (_m, oct: string) => String.fromCharCode(parseInt(oct, 8)));
}

/** Mount points at or below dir, deepest first. */
export async function mountsUnder(dir: string): Promise<string[]> {
  const root = path.resolve(dir);
  const text = await readFile('/proc/self/mountinfo', 'utf8');
  const points = text
    .split('\n')
    .map((line) => line.split(' ')[4])
    .filter((p): p is string => p !== undefined)
    .map(unescapeMountPath)
    .filter((p) => p === root || p.startsWith(root + path.sep));
  return [...new Set(points)].sort((a, b) => b.length - a.length);
}

/**
 * Lazily unmount everything below dir (netns bind mounts, leftover layer
 * mounts) so rm -rf cannot fail with EBUSY or walk into a live filesystem.
 */
export async function unmountAllUnder(dir: string): Promise<void> {
  for (const point of await mountsUnder(dir)) {
    await run('umount', ['-l', point], { timeoutMs: 10_000 });
  }
}
