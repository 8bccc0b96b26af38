// tier: unit
// VERIFY_ON_READ=once and the scrubber (issue 24, decision #107), in process over real files in a temp
// directory store: a file is hashed in full on its first read and trusted while unchanged; a flipped byte
// is never delivered as a complete blob, whether it was flipped before a read (with its mtime set back:
// its ctime gives it away) or during one (the fstat before the last byte); the scrubber drops a file that
// no longer matches.
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import { open, stat, unlink, utimes, writeFile } from 'node:fs/promises';
import { Writable } from 'node:stream';
import { setTimeout as sleep } from 'node:timers/promises';
import { after, before, describe, it } from 'node:test';
import { pino } from 'pino';
import { contentPath, openContent } from '../src/cache/content-files.js';
import type { ContentFile, StoredContent } from '../src/cache/content-store.js';
import { LocalStore } from '../src/cache/local/local-store.js';
import { Scrubber } from '../src/cache/scrubber.js';
import { TrustedFiles } from '../src/cache/trusted-files.js';
import { ChangedContentError, CorruptContentError, VerifiedFileReader } from '../src/cache/verified-file-reader.js';
import type { Logger } from '../src/telemetry/log.js';
import { TmpDirs } from './harness/tmp.js';
import { makeBlob } from './support/fake-registry.js';
import { Sink } from './support/sink.js';

const MiB = 1024 * 1024;
const FROM = { ref: 'registry.test/lib/app', tag: null };
const sha256 = (data: Buffer): string => 'sha256:' + crypto.createHash('sha256').update(data).digest('hex');

async function flipByte(file: string, offset: number): Promise<void> {
  const handle = await open(file, 'r+');
  try {
    const one = Buffer.alloc(1);
    await handle.read(one, 0, 1, offset);
    one[0]! ^= 0xff;
    await handle.write(one, 0, 1, offset);
  } finally {
    await handle.close();
  }
}

/** A content file that counts the bytes read from it, and runs `onFirstRead` once, after its first read. */
function counted(file: ContentFile, onFirstRead?: () => Promise<void>): ContentFile & { bytesRead: number } {
  let first = onFirstRead;
  const c = {
    bytesRead: 0,
    size: file.size,
    identity: file.identity,
    restat: () => file.restat!(),
    async read(buffer: Buffer, length: number, position: number) {
      const n = await file.read(buffer, length, position);
      c.bytesRead += n;
      const run = first;
      first = undefined;
      await run?.();
      return n;
    },
    close: () => file.close(),
  };
  return c;
}

function logCapture(): { log: Logger; lines: Record<string, unknown>[] } {
  const lines: Record<string, unknown>[] = [];
  const sink = new Writable({ write: (chunk: Buffer, _e, done) => (lines.push(JSON.parse(chunk.toString()) as Record<string, unknown>), done()) });
  return { log: pino({ level: 'info' }, sink) as Logger, lines };
}

describe('VERIFY_ON_READ=once (in-process, a directory store)', () => {
  const tmp = new TmpDirs();
  let store: LocalStore;
  // Not a multiple of the 1 MiB read chunk.
  const data = makeBlob(2 * MiB + 4321, 'verify-once').data;
  const digest = sha256(data);
  const size = data.length;
  const content: StoredContent = { kind: 'blob', digest, size, mediaType: 'application/octet-stream' };
  let dir: string;
  let file: string; // the stored content file

  before(async () => {
    dir = await tmp.make('regcache-verify-once');
    store = await LocalStore.open(dir);
    await store.putVerified(content, data, FROM);
    file = contentPath(dir, digest);
  });
  after(async () => {
    await store.close();
    await tmp.cleanup();
  });

  const identityNow = async () => {
    const f = (await openContent(dir, digest))!;
    await f.close();
    return f.identity;
  };

  /** One whole-file read through the reader, as the content responder makes it with VERIFY_ON_READ=once. */
  async function serve(trusted: TrustedFiles, opened?: ContentFile & { bytesRead: number }, range: [number, number] = [0, size - 1]) {
    const f = opened ?? counted((await openContent(dir, digest))!);
    const sink = new Sink();
    const error = await new VerifiedFileReader(f, { size, digest, start: range[0], end: range[1] })
      .sendTo(sink, { verify: true, trusted, onBytes: () => undefined })
      .then(
        () => null,
        (err: Error) => err,
      );
    await new Promise((resolve) => setImmediate(resolve));
    return { data: sink.data, error, bytesRead: f.bytesRead };
  }

  it('hashes a file in full on its first read, then reads only the range while the file is unchanged', async () => {
    const trusted = new TrustedFiles({ settleMs: 0 });
    const first = await serve(trusted, undefined, [0, 99]);
    assert.equal(first.error, null);
    assert.ok(first.data.equals(data.subarray(0, 100)));
    assert.equal(first.bytesRead, size, 'the first read hashed the whole file');
    assert.ok(trusted.trusts(digest, await identityNow()));

    const second = await serve(trusted, undefined, [0, 99]);
    assert.equal(second.error, null);
    assert.ok(second.data.equals(data.subarray(0, 100)));
    assert.equal(second.bytesRead, 100, 'trusted: the range only');

    const whole = await serve(trusted);
    assert.ok(whole.data.equals(data));
  });

  it('does not trust a file changed moments before it was verified (timestamps may be as coarse as a tick)', async () => {
    const trusted = new TrustedFiles({ settleMs: 60_000 }); // the store's file was written in this test run
    await serve(trusted);
    const again = await serve(trusted, undefined, [0, 99]);
    assert.equal(again.bytesRead, size, 'hashed again: not trusted yet');
  });

  it('a byte flipped after the first verified read, its mtime set back (utimes), is caught by its ctime: never a complete blob', async () => {
    const trusted = new TrustedFiles({ settleMs: 0 });
    // Whole seconds, so that setting the mtime back restores it exactly (utimes takes seconds).
    await utimes(file, 1_700_000_000, 1_700_000_000);
    assert.equal((await serve(trusted)).error, null);
    assert.equal((await serve(trusted, undefined, [0, 9])).bytesRead, 10, 'trusted now');

    const before = await stat(file, { bigint: true });
    await flipByte(file, size - 5);
    await utimes(file, 1_700_000_000, 1_700_000_000);
    const afterFlip = await stat(file, { bigint: true });
    assert.equal(afterFlip.mtimeNs, before.mtimeNs, 'the mtime is as it was');
    assert.equal(afterFlip.size, before.size);
    assert.equal(afterFlip.ino, before.ino);
    assert.notEqual(afterFlip.ctimeNs, before.ctimeNs, 'the ctime moved (no call sets it back)');

    const r = await serve(trusted);
    assert.ok(r.error instanceof CorruptContentError, `got ${String(r.error)}`);
    assert.equal(r.data.length, size - 1, 'all but the last byte: the client sees a cut');
    assert.equal(r.bytesRead, size, 'hashed in full: the file is not what was verified');
    await flipByte(file, size - 5); // back to the stored content for the next test
  });

  it('a byte flipped while a trusted file is read: the fstat before the last byte cuts the client and the trust goes', async () => {
    const trusted = new TrustedFiles({ settleMs: 0 });
    await utimes(file, 1_700_000_000, 1_700_000_000);
    assert.equal((await serve(trusted)).error, null);
    const f = counted((await openContent(dir, digest))!, () => flipByte(file, size - 5));
    const r = await serve(trusted, f);
    assert.ok(r.error instanceof ChangedContentError, `got ${String(r.error)}`);
    assert.equal(r.data.length, size - 1, 'all but the last byte, never a complete blob');
    assert.equal(r.bytesRead, size - 1, 'trusted: read as a range, not hashed');
    assert.equal(trusted.trusts(digest, await identityNow()), false);
    const next = await serve(trusted);
    assert.ok(next.error instanceof CorruptContentError, 'the next read hashes it and finds it corrupt');
    await flipByte(file, size - 5);
  });

  it('a trusted file removed while it is read (cache rm, eviction, a commit over it): the client gets every byte', async () => {
    const trusted = new TrustedFiles({ settleMs: 0 });
    await utimes(file, 1_700_000_000, 1_700_000_000);
    assert.equal((await serve(trusted)).error, null);
    const f = counted((await openContent(dir, digest))!, () => unlink(file));
    const r = await serve(trusted, f);
    assert.equal(r.error, null, `got ${String(r.error)}`);
    assert.ok(r.data.equals(data), 'the whole blob');
    assert.equal(r.bytesRead, size, 'trusted: read as a range, not hashed');
    await writeFile(file, data); // stored again for the next tests
  });

  it('a byte flipped and the file removed while a trusted file is read: still cut (its mtime moved)', async () => {
    const trusted = new TrustedFiles({ settleMs: 0 });
    await utimes(file, 1_700_000_000, 1_700_000_000);
    assert.equal((await serve(trusted)).error, null);
    const f = counted((await openContent(dir, digest))!, async () => {
      await flipByte(file, size - 5);
      await unlink(file); // no name left, as a removal leaves it
    });
    const r = await serve(trusted, f);
    assert.ok(r.error instanceof ChangedContentError, `got ${String(r.error)}`);
    assert.equal(r.data.length, size - 1, 'all but the last byte, never a complete blob');
    await writeFile(file, data);
  });

  it('trusts a file its own fill committed from the first read (decision #116): the range only, not the whole file', async () => {
    const trusted = new TrustedFiles({ settleMs: 60_000 }); // a read's verification of this fresh file would not count
    trusted.recordCommit(digest, Date.now());
    const first = await serve(trusted, undefined, [0, 99]);
    assert.equal(first.error, null);
    assert.ok(first.data.equals(data.subarray(0, 100)));
    assert.equal(first.bytesRead, 100, 'trusted from the commit: not hashed');
    assert.ok(trusted.trusts(digest, await identityNow()), 'and trusted as the file is now');
    trusted.forget(digest);
    assert.equal((await serve(trusted, undefined, [0, 99])).bytesRead, size, 'forgotten: hashed again');
  });

  it('a file changed after its fill committed it is hashed at its first read: a flipped byte is never a complete blob', async () => {
    const trusted = new TrustedFiles({ settleMs: 0 });
    const committedMs = Date.now();
    trusted.recordCommit(digest, committedMs);
    // A change later than the commit (a change within the commit's own clock tick shows in no timestamp:
    // the scrubber's and the client's to catch, decision #116).
    await sleep(20);
    await flipByte(file, 7);
    assert.ok((await identityNow())!.changedMs > committedMs, 'the ctime moved past the commit');
    const r = await serve(trusted);
    assert.ok(r.error instanceof CorruptContentError, `got ${String(r.error)}`);
    assert.equal(r.data.length, size - 1, 'all but the last byte: the client sees a cut');
    assert.equal(r.bytesRead, size, 'hashed in full');
    await flipByte(file, 7);
  });

  it('the scrubber drops a file that no longer matches its digest and keeps one that does (log: CORRUPT)', async () => {
    const other = makeBlob(300_000, 'verify-once-other').data;
    const otherContent: StoredContent = { kind: 'blob', digest: sha256(other), size: other.length, mediaType: 'application/octet-stream' };
    await store.putVerified(otherContent, other, FROM);
    const { log, lines } = logCapture();
    const scrubber = new Scrubber(store, Infinity, log);
    assert.deepEqual(await scrubber.pass(), { checked: 2, bytes: size + other.length, dropped: 0 });

    await flipByte(store.where(otherContent.digest), 1234);
    const pass = await scrubber.pass();
    assert.deepEqual(pass, { checked: 1, bytes: size + other.length, dropped: 1 });
    assert.equal(store.index.get('blob', otherContent.digest), undefined, 'the entry is gone');
    assert.equal(await openContent(dir, otherContent.digest), null, 'and its file');
    assert.ok(store.index.get('blob', digest), 'the good one stays');
    const line = lines.find((l) => l.msg === 'stored content does not match its digest; dropped');
    assert.ok(line, JSON.stringify(lines));
    assert.equal(line.cache, 'CORRUPT');
    assert.equal(line.digest, otherContent.digest);
  });
});
