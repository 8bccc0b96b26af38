// The CPU bench's yardstick for a cold fill's first half: the least a Node process can do to take a blob
// from a registry as regcache's fill does, with none of regcache's code. undici GET over TLS (the client
// regcache uses), every chunk hashed with sha256 and written to a file with writev, batched as the stream
// gives them; the digest checked at the end. It fetches once per line on stdin and answers each with
// {"bytes":N,"ok":true|false}; prints {"ready":true} first.
// Usage: node --import tsx bench/cpu/bare-receive.ts <url> <CA file> <sha256:digest> <scratch file>
import crypto from 'node:crypto';
import { readFileSync } from 'node:fs';
import { open } from 'node:fs/promises';
import readline from 'node:readline';
import { Writable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { Agent } from 'undici';

const [url, caFile, digest, scratch] = process.argv.slice(2) as [string, string, string, string];
const agent = new Agent({ connect: { ca: readFileSync(caFile) } });
const target = new URL(url);

async function receive(): Promise<{ bytes: number; ok: boolean }> {
  const res = await agent.request({ origin: target.origin, path: target.pathname, method: 'GET' });
  const file = await open(scratch, 'w');
  const hash = crypto.createHash('sha256');
  let bytes = 0;
  try {
    const write = async (chunks: Buffer[]): Promise<void> => {
      for (const chunk of chunks) hash.update(chunk);
      let position = bytes;
      for (const chunk of chunks) bytes += chunk.length;
      // writev may write part of what it was given: the rest again from where it stopped.
      let pending = chunks;
      while (pending.length > 0) {
        const { bytesWritten } = await file.writev(pending, position);
        position += bytesWritten;
        let skip = bytesWritten;
        while (pending.length > 0 && skip >= pending[0]!.length) skip -= pending.shift()!.length;
        if (skip > 0) pending[0] = pending[0]!.subarray(skip);
      }
    };
    await pipeline(
      res.body,
      new Writable({
        highWaterMark: 1 << 20,
        write: (chunk: Buffer, _encoding, callback) => void write([chunk]).then(() => callback(), callback),
        writev: (chunks, callback) => void write(chunks.map((c) => c.chunk as Buffer)).then(() => callback(), callback),
      }),
    );
  } finally {
    await file.close();
  }
  return { bytes, ok: `sha256:${hash.digest('hex')}` === digest };
}

const lines = readline.createInterface({ input: process.stdin });
process.stdout.write(`${JSON.stringify({ ready: true })}\n`);
for await (const _line of lines) process.stdout.write(`${JSON.stringify(await receive())}\n`);
await agent.close();
