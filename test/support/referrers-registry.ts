// An HTTPS registry that serves the OCI 1.1 referrers API, which docker-registry 2.8 does not: per
// repository an image manifest (the subject, tag v1), a cosign-style signature and an attestation that
// name it as their subject, the signature also under cosign's fallback tag `sha256-<hex>.sig`, and
// GET /v2/<name>/referrers/<subject>[?artifactType=] as an image index, filtered with OCI-Filters-Applied.
// A repository may be private (Basic credentials only), or answer referrers 404 (no API). `mode` makes it
// fail: 503 to everything, or every connection cut.
import crypto from 'node:crypto';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { listenHttps, type RunningServer, type TlsFiles } from '../harness/https-server.js';

export const OCI_MANIFEST = 'application/vnd.oci.image.manifest.v1+json';
export const OCI_INDEX = 'application/vnd.oci.image.index.v1+json';
export const SIGNATURE_TYPE = 'application/vnd.dev.cosign.artifact.sig.v1+json';
export const ATTESTATION_TYPE = 'application/vnd.dsse.envelope.v1+json';

export interface Document {
  digest: string;
  data: Buffer;
  mediaType: string;
}

export interface SignedRepository {
  name: string;
  subject: Document;
  signature: Document;
  attestation: Document;
  /** cosign's fallback tag of the signature: sha256-<hex>.sig */
  signatureTag: string;
  /** The unfiltered referrers index as this registry serves it. */
  referrers: Document;
  /** The index filtered to one artifact type, as this registry serves it. */
  filtered(artifactType: string): Document;
}

interface RepositoryOptions {
  credentials?: string; // the Authorization it accepts (Basic ...): private; else anyone reads it
  referrersApi?: boolean; // false: referrers answered 404, as a registry without the API
}

function document(value: unknown, mediaType: string): Document {
  const data = Buffer.from(JSON.stringify(value));
  return { digest: 'sha256:' + crypto.createHash('sha256').update(data).digest('hex'), data, mediaType };
}

function descriptor(doc: Document, artifactType: string) {
  return { mediaType: doc.mediaType, digest: doc.digest, size: doc.data.length, artifactType };
}

function referrersIndex(descriptors: object[]): Document {
  return document({ schemaVersion: 2, mediaType: OCI_INDEX, manifests: descriptors }, OCI_INDEX);
}

export class ReferrersRegistry {
  readonly seen: string[] = []; // "METHOD path?query"
  mode: 'up' | '503' | 'cut' = 'up';
  private readonly repositories = new Map<string, { repo: SignedRepository; options: RepositoryOptions }>();
  private server: RunningServer | null = null;

  get port(): number {
    if (!this.server) throw new Error('not started');
    return this.server.port;
  }

  async start(tls: TlsFiles): Promise<void> {
    this.server = await listenHttps(tls, (req, res) => this.handle(req, res));
  }

  close(): Promise<void> {
    return this.server?.close() ?? Promise.resolve();
  }

  /** A repository with a subject image, its signature and attestation (seed: distinct bytes per repository). */
  addRepository(name: string, options: RepositoryOptions = {}): SignedRepository {
    const blob = (seed: string) => ({
      mediaType: 'application/octet-stream',
      digest: 'sha256:' + crypto.createHash('sha256').update(seed).digest('hex'),
      size: 1,
    });
    const subject = document({ schemaVersion: 2, mediaType: OCI_MANIFEST, config: blob(`${name} config`), layers: [blob(`${name} layer`)] }, OCI_MANIFEST);
    const subjectDescriptor = { mediaType: OCI_MANIFEST, digest: subject.digest, size: subject.data.length };
    const signature = document(
      {
        schemaVersion: 2,
        mediaType: OCI_MANIFEST,
        artifactType: SIGNATURE_TYPE,
        config: { mediaType: 'application/vnd.oci.empty.v1+json', digest: blob('{}').digest, size: 2 },
        layers: [
          {
            ...blob(`${name} signature`),
            mediaType: 'application/vnd.dev.cosign.simplesigning.v1+json',
            annotations: { 'dev.cosignproject.cosign/signature': 'MEUCIQ' },
          },
        ],
        subject: subjectDescriptor,
      },
      OCI_MANIFEST,
    );
    const attestation = document(
      {
        schemaVersion: 2,
        mediaType: OCI_MANIFEST,
        artifactType: ATTESTATION_TYPE,
        config: { mediaType: 'application/vnd.oci.empty.v1+json', digest: blob('{}').digest, size: 2 },
        layers: [{ ...blob(`${name} attestation`), mediaType: ATTESTATION_TYPE }],
        subject: subjectDescriptor,
      },
      OCI_MANIFEST,
    );
    const all = [descriptor(signature, SIGNATURE_TYPE), descriptor(attestation, ATTESTATION_TYPE)];
    const repo: SignedRepository = {
      name,
      subject,
      signature,
      attestation,
      signatureTag: `${subject.digest.replace(':', '-')}.sig`,
      referrers: referrersIndex(all),
      filtered: (artifactType) => referrersIndex(all.filter((d) => d.artifactType === artifactType)),
    };
    this.repositories.set(name, { repo, options });
    return repo;
  }

  count(pathPart: string): number {
    return this.seen.filter((line) => line.includes(pathPart)).length;
  }

  private handle(req: IncomingMessage, res: ServerResponse): void {
    this.seen.push(`${req.method} ${req.url}`);
    if (this.mode === 'cut') return void req.socket.destroy();
    if (this.mode === '503')
      return void res.writeHead(503, { 'content-type': 'text/plain', 'content-length': 5 }).end(req.method === 'HEAD' ? undefined : 'down\n');
    const url = new URL(req.url ?? '/', 'https://registry.test');
    if (url.pathname === '/v2/') return void res.writeHead(200, { 'content-type': 'application/json' }).end('{}');
    const m = /^\/v2\/(.+)\/(manifests|referrers)\/([^/]+)$/.exec(url.pathname);
    const found = m ? this.repositories.get(m[1]!) : undefined;
    if (!m || !found) return this.error(req, res, 404, 'NAME_UNKNOWN');
    const { repo, options } = found;
    if (options.credentials !== undefined && req.headers.authorization !== options.credentials) {
      res.setHeader('www-authenticate', 'Basic realm="registry.test"');
      return this.error(req, res, 401, 'UNAUTHORIZED');
    }
    const reference = m[3]!;
    if (m[2] === 'referrers') {
      if (options.referrersApi === false || reference !== repo.subject.digest) return this.error(req, res, 404, 'NOT_FOUND');
      const artifactType = url.searchParams.get('artifactType');
      const index = artifactType === null ? repo.referrers : repo.filtered(artifactType);
      const headers: Record<string, string | number> = { 'content-type': OCI_INDEX, 'content-length': index.data.length };
      if (artifactType !== null) headers['oci-filters-applied'] = 'artifactType';
      return void res.writeHead(200, headers).end(req.method === 'HEAD' ? undefined : index.data);
    }
    const byName: Record<string, Document> = { v1: repo.subject, [repo.signatureTag]: repo.signature };
    const doc = byName[reference] ?? [repo.subject, repo.signature, repo.attestation].find((d) => d.digest === reference);
    if (!doc) return this.error(req, res, 404, 'MANIFEST_UNKNOWN');
    res
      .writeHead(200, { 'content-type': doc.mediaType, 'content-length': doc.data.length, 'docker-content-digest': doc.digest })
      .end(req.method === 'HEAD' ? undefined : doc.data);
  }

  private error(req: IncomingMessage, res: ServerResponse, status: number, code: string): void {
    const body = JSON.stringify({ errors: [{ code, message: code.toLowerCase() }] });
    res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) }).end(req.method === 'HEAD' ? undefined : body);
  }
}
