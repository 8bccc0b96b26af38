// The Bucket (bucket.ts) of an S3-compatible service, over the AWS SDK: AWS S3, Ceph RGW, MinIO, R2.
// Credentials and region come from the SDK's default chain (AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY,
// AWS_REGION, shared config and credentials files, instance and pod roles); regcache never sees them in
// its configuration and never logs them. Errors become StoreUnavailableError with the operation, the
// status and the service's error code: nothing of the request's signature or headers.
import http from 'node:http';
import https from 'node:https';
import type { Duplex, Readable } from 'node:stream';
import {
  AbortMultipartUploadCommand,
  CompleteMultipartUploadCommand,
  CreateBucketCommand,
  CreateMultipartUploadCommand,
  DeleteObjectCommand,
  GetObjectCommand,
  HeadBucketCommand,
  HeadObjectCommand,
  ListObjectsV2Command,
  PutObjectCommand,
  S3Client,
  UploadPartCommand,
  type ListObjectsV2CommandOutput,
} from '@aws-sdk/client-s3';
import { getSignedUrl } from '@aws-sdk/s3-request-presigner';
import type { Bucket, ObjectInfo, UploadedPart } from './bucket.js';
import { StoreUnavailableError } from '../content-store.js';
import { errorMessage } from '../../telemetry/error-message.js';

export interface S3BucketOptions {
  bucket: string;
  endpoint: string | null; // S3_ENDPOINT: another service than AWS S3
  forcePathStyle: boolean; // S3_FORCE_PATH_STYLE: http://endpoint/bucket/key rather than http://bucket.endpoint/key
  display: string; // "s3://bucket/prefix" for messages
  idleTimeoutMs?: number; // tests: the idle timeout (default IDLE_TIMEOUT_MS)
}

// A bucket that does not answer is reported unreachable within seconds, not after the SDK's default
// retries (requests waiting on it hold a client's pull meanwhile). The idle timeout is the socket's (no
// byte either way for that long ends the request): the SDK's `requestTimeout` only logs a warning, and a
// hung server (RGW stopped with SIGSTOP) then held every request and the probe forever. It also cuts a
// HIT whose client stopped reading for that long (the GET's body is paused meanwhile). regcache's own agents
// arm it (idleAgent): the SDK's `socketTimeout` arms a timeout of 6 s or more only 3 s into each request
// (@smithy/node-http-handler), which made a hung bucket's two attempts take 26 s rather than 20.
const CONNECT_TIMEOUT_MS = 3_000;
const IDLE_TIMEOUT_MS = 10_000;
const MAX_ATTEMPTS = 2;
// The reachability probe gives up sooner: /readyz turns false within a probe period or two.
const PROBE_TIMEOUT_MS = 4_000;
// Each HIT being served holds a socket for its GET; the SDK's default of 50 would queue the 51st client.
const MAX_SOCKETS = 512;
// Without a region anywhere in the default chain (usual with S3_ENDPOINT), the one every S3-compatible
// service accepts.
const FALLBACK_REGION = 'us-east-1';

export class S3Bucket implements Bucket {
  readonly display: string;

  private constructor(
    private readonly client: S3Client,
    private readonly name: string,
    display: string,
  ) {
    this.display = display;
  }

  static async create(options: S3BucketOptions): Promise<S3Bucket> {
    const shared = {
      endpoint: options.endpoint ?? undefined,
      forcePathStyle: options.forcePathStyle,
      // The SDK's default checksums make a PUT of a stream body fail on RGW (411) and add a trailer
      // pass over every byte; regcache verifies sha256 digests itself.
      requestChecksumCalculation: 'WHEN_REQUIRED' as const,
      responseChecksumValidation: 'WHEN_REQUIRED' as const,
      maxAttempts: MAX_ATTEMPTS,
      requestHandler: {
        connectionTimeout: CONNECT_TIMEOUT_MS,
        socketTimeout: 0, // the agents' (idleAgent)
        httpAgent: idleAgent(http.Agent, options.idleTimeoutMs ?? IDLE_TIMEOUT_MS),
        httpsAgent: idleAgent(https.Agent, options.idleTimeoutMs ?? IDLE_TIMEOUT_MS),
      },
    };
    const probe = new S3Client(shared);
    // no region configured: the SDK's default chain had none, the fallback works for RGW and MinIO.
    const region = await probe.config.region().catch(() => FALLBACK_REGION);
    probe.destroy();
    return new S3Bucket(new S3Client({ ...shared, region }), options.bucket, options.display);
  }

  async ensure(): Promise<'created' | 'exists'> {
    try {
      await this.client.send(new HeadBucketCommand({ Bucket: this.name }));
      return 'exists';
    } catch (err) {
      if (statusOf(err) !== 404) throw this.unavailable('HeadBucket', err);
    }
    try {
      await this.client.send(new CreateBucketCommand({ Bucket: this.name }));
      return 'created';
    } catch (err) {
      if (codeOf(err) === 'BucketAlreadyOwnedByYou') return 'exists'; // another replica created it meanwhile
      throw this.unavailable('CreateBucket', err);
    }
  }

  async probe(): Promise<void> {
    await this.call('HeadBucket', () => this.client.send(new HeadBucketCommand({ Bucket: this.name }), { abortSignal: AbortSignal.timeout(PROBE_TIMEOUT_MS) }));
  }

  async head(key: string): Promise<ObjectInfo | null> {
    const out = await this.orMissing('HeadObject', () => this.client.send(new HeadObjectCommand({ Bucket: this.name, Key: key })));
    return out && { key, size: out.ContentLength ?? 0, etag: unquote(out.ETag), lastModified: out.LastModified?.getTime() ?? 0 };
  }

  async get(key: string): Promise<Buffer | null> {
    const out = await this.orMissing('GetObject', () => this.client.send(new GetObjectCommand({ Bucket: this.name, Key: key })));
    if (!out?.Body) return null;
    return this.call('GetObject', async () => Buffer.from(await out.Body!.transformToByteArray()));
  }

  async read(key: string, start: number, end: number): Promise<Readable | null> {
    const out = await this.orMissing('GetObject', () =>
      this.client.send(new GetObjectCommand({ Bucket: this.name, Key: key, Range: `bytes=${start}-${end}` })),
    );
    return (out?.Body as Readable | undefined) ?? null;
  }

  async put(key: string, body: Buffer, options: { ifNoneMatch?: boolean } = {}): Promise<boolean> {
    try {
      await this.client.send(
        new PutObjectCommand({ Bucket: this.name, Key: key, Body: body, ContentLength: body.length, IfNoneMatch: options.ifNoneMatch ? '*' : undefined }),
      );
      return true;
    } catch (err) {
      // 412: the key exists. 409 (AWS): a conditional write of the same key raced this one and won.
      if (options.ifNoneMatch && (statusOf(err) === 412 || statusOf(err) === 409)) return false;
      throw this.unavailable('PutObject', err);
    }
  }

  async delete(key: string): Promise<void> {
    await this.call('DeleteObject', () => this.client.send(new DeleteObjectCommand({ Bucket: this.name, Key: key })));
  }

  async list(prefix: string): Promise<ObjectInfo[]> {
    const found: ObjectInfo[] = [];
    let token: string | undefined;
    do {
      const page: ListObjectsV2CommandOutput = await this.call('ListObjectsV2', () =>
        this.client.send(new ListObjectsV2Command({ Bucket: this.name, Prefix: prefix, ContinuationToken: token })),
      );
      for (const o of page.Contents ?? []) found.push({ key: o.Key!, size: o.Size ?? 0, etag: unquote(o.ETag), lastModified: o.LastModified?.getTime() ?? 0 });
      token = page.IsTruncated ? page.NextContinuationToken : undefined;
    } while (token);
    return found;
  }

  async createUpload(key: string): Promise<string> {
    const out = await this.call('CreateMultipartUpload', () => this.client.send(new CreateMultipartUploadCommand({ Bucket: this.name, Key: key })));
    if (!out.UploadId) throw new StoreUnavailableError(`${this.display}: CreateMultipartUpload answered no upload id`);
    return out.UploadId;
  }

  async uploadPart(key: string, uploadId: string, partNumber: number, body: Buffer): Promise<UploadedPart> {
    const out = await this.call('UploadPart', () =>
      this.client.send(
        new UploadPartCommand({ Bucket: this.name, Key: key, UploadId: uploadId, PartNumber: partNumber, Body: body, ContentLength: body.length }),
      ),
    );
    return { partNumber, etag: out.ETag ?? '' };
  }

  async completeUpload(key: string, uploadId: string, parts: UploadedPart[]): Promise<void> {
    const Parts = parts.map((p) => ({ PartNumber: p.partNumber, ETag: p.etag }));
    await this.call('CompleteMultipartUpload', () =>
      this.client.send(new CompleteMultipartUploadCommand({ Bucket: this.name, Key: key, UploadId: uploadId, MultipartUpload: { Parts } })),
    );
  }

  async abortUpload(key: string, uploadId: string): Promise<void> {
    // Gone already (an earlier abort whose answer was lost): what an abort wants.
    await this.orMissing('AbortMultipartUpload', () => this.client.send(new AbortMultipartUploadCommand({ Bucket: this.name, Key: key, UploadId: uploadId })));
  }

  async presign(key: string, expiresInSeconds: number): Promise<string> {
    // Points at S3_ENDPOINT as this replica sees it (or AWS S3's own host): the client must reach it.
    return this.call('presign GetObject', () =>
      getSignedUrl(this.client, new GetObjectCommand({ Bucket: this.name, Key: key }), { expiresIn: expiresInSeconds }),
    );
  }

  private async call<T>(operation: string, request: () => Promise<T>): Promise<T> {
    try {
      return await request();
    } catch (err) {
      throw this.unavailable(operation, err);
    }
  }

  /** The answer, or null when the key does not exist. */
  private async orMissing<T>(operation: string, request: () => Promise<T>): Promise<T | null> {
    try {
      return await request();
    } catch (err) {
      if (statusOf(err) === 404 && codeOf(err) !== 'NoSuchBucket') return null;
      throw this.unavailable(operation, err);
    }
  }

  /** The operation, status and the service's code: enough to act on, nothing secret (the SDK's messages hold no signature). */
  private unavailable(operation: string, err: unknown): StoreUnavailableError {
    const status = statusOf(err);
    const code = codeOf(err) ?? (err instanceof Error ? err.name : undefined);
    const message = errorMessage(err);
    const said = message && message !== code && message !== 'UnknownError' ? `: ${message}` : '';
    return new StoreUnavailableError(`${this.display}: ${operation} failed (${status === undefined ? 'no answer' : `HTTP ${status}`}, ${code}${said})`);
  }
}

/**
 * An agent whose sockets are destroyed after `idleMs` without a byte either way, from the moment they exist
 * (and kept so between requests: Node resets a free socket's timeout to the agent's `timeout`). The error
 * is a TimeoutError, which the SDK retries as any timeout.
 */
function idleAgent<A extends typeof http.Agent | typeof https.Agent>(Base: A, idleMs: number): InstanceType<A> {
  const Idle = class extends (Base as typeof http.Agent) {
    override createConnection(options: http.ClientRequestArgs, callback?: (err: Error | null, stream: Duplex) => void): Duplex | null | undefined {
      const socket = super.createConnection(options, callback);
      socket?.on('timeout', () => socket.destroy(Object.assign(new Error(`no byte either way for ${idleMs} ms`), { name: 'TimeoutError', code: 'ETIMEDOUT' })));
      return socket;
    }
  };
  return new Idle({ keepAlive: true, maxSockets: MAX_SOCKETS, timeout: idleMs }) as InstanceType<A>;
}

function statusOf(err: unknown): number | undefined {
  return (err as { $metadata?: { httpStatusCode?: number } }).$metadata?.httpStatusCode;
}

function codeOf(err: unknown): string | undefined {
  return (err as { Code?: string; name?: string }).Code ?? (err as { name?: string }).name;
}

/** ETags come quoted from S3; a quoted If-Match fails on RGW, and comparisons are simpler without. */
function unquote(etag: string | undefined): string {
  return (etag ?? '').replace(/^"|"$/g, '');
}
