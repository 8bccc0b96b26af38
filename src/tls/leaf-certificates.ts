// Leaf certificates for intercepted hosts, minted on demand and kept in a bounded LRU map of
// SecureContexts. All leaves share one key (leaf-key.ts): minting is then a signature only.
import net from 'node:net';
import tls from 'node:tls';
import type { CertificateAuthority } from './certificate-authority.js';
import type { LeafKey } from './leaf-key.js';
import { signCertificate } from './x509-signer.js';
import { SERVER_CIPHERS } from './server-ciphers.js';

const LEAF_VALIDITY_DAYS = 397; // the CA/Browser Forum ceiling; Apple clients refuse longer
const RENEW_BEFORE_MS = 24 * 60 * 60 * 1000;
const BACKDATE_MS = 60 * 60 * 1000; // tolerate clients whose clock runs a little behind

interface Leaf {
  context: tls.SecureContext;
  renewAt: number;
}

export class LeafCertificates {
  private readonly leaves = new Map<string, Leaf>();
  minted = 0;

  private constructor(
    private readonly ca: CertificateAuthority,
    private readonly keyPem: string,
    private readonly publicKeyPem: string,
    private readonly maxEntries: number,
  ) {}

  static create(ca: CertificateAuthority, key: LeafKey, maxEntries = 1000): LeafCertificates {
    return new LeafCertificates(ca, key.keyPem, key.publicKeyPem, maxEntries);
  }

  /** Mints one throwaway leaf so that the first real CONNECT does not pay for cold code paths. */
  warmUp(): void {
    this.mint('regcache.invalid', Date.now());
    this.minted--;
  }

  /** The SecureContext for host (a DNS name or an IP literal), minting a certificate if needed. */
  contextFor(host: string): tls.SecureContext {
    const name = host.toLowerCase();
    const now = Date.now();
    const cached = this.leaves.get(name);
    if (cached && cached.renewAt > now) {
      // Re-insert to keep Map order = recency order.
      this.leaves.delete(name);
      this.leaves.set(name, cached);
      return cached.context;
    }
    const leaf = this.mint(name, now);
    this.leaves.delete(name);
    this.leaves.set(name, leaf);
    if (this.leaves.size > this.maxEntries) {
      const oldest = this.leaves.keys().next().value;
      if (oldest !== undefined) this.leaves.delete(oldest);
    }
    return leaf.context;
  }

  /** PEM certificate and key for host, for a server that needs files rather than a context (the mirror). */
  pemFor(host: string): { cert: string; key: string } {
    return { cert: this.mintPem(host.toLowerCase(), Date.now()).certPem, key: this.keyPem };
  }

  private mint(name: string, now: number): Leaf {
    const { certPem, notAfter } = this.mintPem(name, now);
    return {
      context: tls.createSecureContext({ key: this.keyPem, cert: certPem, ...SERVER_CIPHERS }),
      // Near the CA's own expiry a new leaf could not last longer: keep this one until it ends.
      renewAt: notAfter - now > 2 * RENEW_BEFORE_MS ? notAfter - RENEW_BEFORE_MS : notAfter,
    };
  }

  private mintPem(name: string, now: number): { certPem: string; notAfter: number } {
    const notAfter = Math.min(now + LEAF_VALIDITY_DAYS * 86400_000, this.ca.notAfter.getTime());
    const altName = net.isIP(name) ? { type: 7, ip: name } : { type: 2, value: name };
    const certPem = signCertificate(
      {
        // CN is truncated to its 64-character limit; clients match on the SAN anyway.
        subject: [{ name: 'commonName', value: name.slice(0, 64) }],
        issuer: this.ca.subject,
        publicKeyPem: this.publicKeyPem,
        notBefore: new Date(now - BACKDATE_MS),
        notAfter: new Date(notAfter),
        extensions: [
          { name: 'basicConstraints', cA: false, critical: true },
          { name: 'keyUsage', digitalSignature: true, keyEncipherment: true, critical: true },
          { name: 'extKeyUsage', serverAuth: true },
          { name: 'subjectAltName', altNames: [altName] },
        ],
      },
      this.ca.key,
    );
    this.minted++;
    return { certPem, notAfter };
  }
}
