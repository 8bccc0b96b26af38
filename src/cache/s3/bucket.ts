// What the S3 store (s3-store.ts) needs of an object store, and nothing more: whole small objects, ranged
// reads, a create that fails when the key exists (If-None-Match: *, the one conditional write AWS S3,
// Ceph RGW, MinIO and R2 all honour), listings, and multipart uploads that stay invisible until completed.
// S3Bucket (s3-bucket.ts) is the AWS SDK's; the tests' in-memory one (test/support/fake-bucket.ts) makes
// races and failures quick to stage. Every method throws StoreUnavailableError (content-store.ts) when the
// bucket cannot be reached or refuses; anything else it throws is a bug.
import type { Readable } from 'node:stream';

export interface ObjectInfo {
  key: string;
  size: number;
  etag: string;
  lastModified: number; // ms since the epoch, the server's clock
}

export interface UploadedPart {
  partNumber: number;
  etag: string;
}

export interface Bucket {
  /** For log lines and errors: "s3://bucket/prefix", never a credential. */
  readonly display: string;
  /** Creates the bucket when it is missing (and allowed); 'created' or 'exists'. */
  ensure(): Promise<'created' | 'exists'>;
  /** One cheap request that succeeds only while the bucket is reachable and readable. */
  probe(): Promise<void>;
  head(key: string): Promise<ObjectInfo | null>;
  get(key: string): Promise<Buffer | null>;
  /** Bytes [start, end] as they arrive (the response body: backpressure is TCP's); null when the key is gone. */
  read(key: string, start: number, end: number): Promise<Readable | null>;
  /** Writes the object; with `ifNoneMatch` only when the key does not exist yet: false when it does. */
  put(key: string, body: Buffer, options?: { ifNoneMatch?: boolean }): Promise<boolean>;
  delete(key: string): Promise<void>;
  /** Every object under the prefix, in key order. */
  list(prefix: string): Promise<ObjectInfo[]>;
  createUpload(key: string): Promise<string>;
  uploadPart(key: string, uploadId: string, partNumber: number, body: Buffer): Promise<UploadedPart>;
  /** Makes the object visible, whole, in one step. */
  completeUpload(key: string, uploadId: string, parts: UploadedPart[]): Promise<void>;
  abortUpload(key: string, uploadId: string): Promise<void>;
  /**
   * A URL that GETs the object without further credentials until it expires (S3_REDIRECT): a bearer
   * credential for that long, never to be logged with its query string. Signed locally, no request.
   */
  presign(key: string, expiresInSeconds: number): Promise<string>;
}
