// The open-files limit (RLIMIT_NOFILE, soft) of a process, from /proc: 500 connections need more
// descriptors than the common default of 1024 leaves room for once upstream sockets and files count.
import { readFile } from 'node:fs/promises';

export async function openFilesLimit(pid: number | 'self'): Promise<number> {
  const limits = await readFile(`/proc/${pid}/limits`, 'utf8');
  const soft = /^Max open files\s+(\d+|unlimited)/m.exec(limits)?.[1];
  if (soft === undefined) throw new Error(`no "Max open files" in /proc/${pid}/limits`);
  return soft === 'unlimited' ? Number.MAX_SAFE_INTEGER : Number(soft);
}
