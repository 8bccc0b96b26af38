// An in-memory Bucket (src/cache/bucket.ts) for in-process tests of the S3 store and the fill locks: the
// behaviour that matters to them, kept honest (a create with ifNoneMatch fails when the key exists, an
// upload is invisible until completed and gone when aborted, ranged reads), plus switches to stage
// failures (down: every call throws StoreUnavailableError) and a count of calls per operation.
import crypto from 'node:crypto';
import { Readable } from 'node:stream';
import type { Bucket, ObjectInfo, UploadedPart } from '../../src/cache/s3/bucket.js';
import { StoreUnavailableError } from '../../src/cache/content-store.js';

/** The fake signature every presigned URL of a FakeBucket carries. */
export const FAKE_SIGNATURE = 'fakesignature0123456789abcdef';

interface StoredObject {
  body: Buffer;
  etag: string;
  lastModified: number;
}

export class FakeBucket implements Bucket {
  readonly display = 's3://fake-bucket/';
  readonly objects = new Map<string, StoredObject>();
  readonly uploads = new Map<string, { key: string; parts: Map<number, Buffer> }>();
  readonly calls = new Map<string, number>();
  down = false;
  /** Delay before each answer (ms): lets calls of racing replicas interleave. */
  latencyMs = 0;

  async ensure(): Promise<'created' | 'exists'> {
    await this.enter('ensure');
    return 'exists';
  }

  async probe(): Promise<void> {
    await this.enter('probe');
  }

  async head(key: string): Promise<ObjectInfo | null> {
    await this.enter('head');
    return this.info(key);
  }

  async get(key: string): Promise<Buffer | null> {
    await this.enter('get');
    return this.objects.get(key)?.body ?? null;
  }

  async read(key: string, start: number, end: number): Promise<Readable | null> {
    await this.enter('read');
    const body = this.objects.get(key)?.body;
    if (!body) return null;
    const range = body.subarray(start, end + 1);
    // In 64 KiB pieces, as a socket would deliver them.
    const pieces: Buffer[] = [];
    for (let at = 0; at < range.length; at += 64 * 1024) pieces.push(range.subarray(at, at + 64 * 1024));
    return Readable.from(pieces, { objectMode: false });
  }

  async put(key: string, body: Buffer, options: { ifNoneMatch?: boolean } = {}): Promise<boolean> {
    await this.enter('put');
    if (options.ifNoneMatch && this.objects.has(key)) return false;
    this.store(key, Buffer.from(body));
    return true;
  }

  async delete(key: string): Promise<void> {
    await this.enter('delete');
    this.objects.delete(key);
  }

  async list(prefix: string): Promise<ObjectInfo[]> {
    await this.enter('list');
    return [...this.objects.keys()]
      .filter((k) => k.startsWith(prefix))
      .sort()
      .map((k) => this.info(k)!);
  }

  async createUpload(key: string): Promise<string> {
    await this.enter('createUpload');
    const id = crypto.randomUUID();
    this.uploads.set(id, { key, parts: new Map() });
    return id;
  }

  async uploadPart(key: string, uploadId: string, partNumber: number, body: Buffer): Promise<UploadedPart> {
    await this.enter('uploadPart');
    const upload = this.upload(key, uploadId);
    upload.parts.set(partNumber, Buffer.from(body));
    return { partNumber, etag: md5(body) };
  }

  async completeUpload(key: string, uploadId: string, parts: UploadedPart[]): Promise<void> {
    await this.enter('completeUpload');
    const upload = this.upload(key, uploadId);
    this.store(key, Buffer.concat(parts.map((p) => upload.parts.get(p.partNumber)!)));
    this.uploads.delete(uploadId);
  }

  async abortUpload(key: string, uploadId: string): Promise<void> {
    await this.enter('abortUpload');
    this.uploads.delete(uploadId); // an unknown upload: S3 answers 404 NoSuchUpload, which S3Bucket takes as done
  }

  /** Not a working URL: shaped like a presigned one (a signature in the query) so tests can look for leaks. */
  async presign(key: string, expiresInSeconds: number): Promise<string> {
    await this.enter('presign');
    return `http://fake-bucket.invalid/${key}?X-Amz-Expires=${expiresInSeconds}&X-Amz-Signature=${FAKE_SIGNATURE}`;
  }

  count(operation: string): number {
    return this.calls.get(operation) ?? 0;
  }

  private async enter(operation: string): Promise<void> {
    this.calls.set(operation, this.count(operation) + 1);
    if (this.latencyMs > 0) await new Promise((resolve) => setTimeout(resolve, Math.random() * this.latencyMs));
    if (this.down) throw new StoreUnavailableError(`${this.display}: ${operation} failed (no answer, ECONNREFUSED)`);
  }

  private store(key: string, body: Buffer): void {
    this.objects.set(key, { body, etag: md5(body), lastModified: Date.now() });
  }

  private info(key: string): ObjectInfo | null {
    const o = this.objects.get(key);
    return o ? { key, size: o.body.length, etag: o.etag, lastModified: o.lastModified } : null;
  }

  private upload(key: string, uploadId: string): { key: string; parts: Map<number, Buffer> } {
    const upload = this.uploads.get(uploadId);
    if (!upload || upload.key !== key) throw new Error(`no upload ${uploadId} of ${key}`);
    return upload;
  }
}

function md5(body: Buffer): string {
  return crypto.createHash('md5').update(body).digest('hex');
}
