// Builds X.509 certificates with node-forge but signs them with native crypto: forge's pure-JS RSA
// takes tens of milliseconds per signature, OpenSSL well under one.
import crypto from 'node:crypto';
import forge from 'node-forge';

// DER prefix of a PKCS#1 v1.5 DigestInfo for SHA-256 (RFC 8017 section 9.2, note 1).
const SHA256_DIGEST_INFO = Buffer.from('3031300d060960864801650304020105000420', 'hex');

export interface SubjectAttr {
  name?: string;
  shortName?: string;
  type?: string; // the attribute's OID
  valueTagClass?: number; // the ASN.1 string type the value is encoded as (UTF8String, PrintableString, ...)
  value: string;
}

export interface CertificateSpec {
  subject: SubjectAttr[];
  issuer: SubjectAttr[];
  publicKeyPem: string;
  notBefore: Date;
  notAfter: Date;
  extensions: object[];
}

/** Returns the PEM of a certificate for spec, signed with sha256WithRSAEncryption by signingKey. */
export function signCertificate(spec: CertificateSpec, signingKey: crypto.KeyObject): string {
  const cert = forge.pki.createCertificate();
  cert.publicKey = forge.pki.publicKeyFromPem(spec.publicKeyPem);
  // A 01 prefix keeps the 17-octet serial positive (RFC 5280 allows 20); 128 random bits never collide.
  cert.serialNumber = '01' + crypto.randomBytes(16).toString('hex');
  cert.validity.notBefore = spec.notBefore;
  cert.validity.notAfter = spec.notAfter;
  cert.setSubject(spec.subject);
  cert.setIssuer(spec.issuer);
  cert.setExtensions(spec.extensions);
  const nativeSigner = {
    sign(md: forge.md.MessageDigest): string {
      const digest = Buffer.from(md.digest().getBytes(), 'binary');
      const signature = crypto.privateEncrypt({ key: signingKey, padding: crypto.constants.RSA_PKCS1_PADDING }, Buffer.concat([SHA256_DIGEST_INFO, digest]));
      return signature.toString('binary');
    },
  };
  cert.sign(nativeSigner as unknown as forge.pki.rsa.PrivateKey, forge.md.sha256.create());
  return forge.pki.certificateToPem(cert);
}

/**
 * The subject of a PEM certificate, for use as the issuer of certificates it signs: encoded again exactly
 * as it is (string types included). Go clients (dockerd, containerd, podman, skopeo) find a certificate's
 * issuer by comparing these bytes, and a CA made by openssl (rpardini's) writes UTF8Strings where forge's
 * default is PrintableString.
 */
export function subjectOf(certPem: string): SubjectAttr[] {
  const cert = forge.pki.certificateFromPem(certPem);
  return cert.subject.attributes.map((a) => {
    const raw = String(a.value); // the value's bytes as forge parsed them; it UTF-8-encodes a UTF8String again when writing
    const tag = a.valueTagClass as unknown as number | undefined; // forge's typings call it a Class; it holds a Type
    const value = tag === forge.asn1.Type.UTF8 ? forge.util.decodeUtf8(raw) : raw;
    return { type: a.type, shortName: a.shortName, name: a.name, ...(tag === undefined ? {} : { valueTagClass: tag }), value };
  });
}

/** notAfter of a PEM certificate. */
export function notAfterOf(certPem: string): Date {
  return new Date(new crypto.X509Certificate(certPem).validTo);
}
