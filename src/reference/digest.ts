// Content digests ("algorithm:encoded", OCI image-spec). regcache stores sha256 content only; a
// well-formed digest of another algorithm is passed through uncached, and a registered algorithm has
// exactly one encoding (anything else under its name is malformed, not another algorithm).

/** The one digest form regcache stores content under, as it appears in the source. */
export const SHA256_PATTERN = 'sha256:[a-f0-9]{64}';

const SHA256 = new RegExp(`^${SHA256_PATTERN}$`);
const ANY_DIGEST = /^[a-z0-9]+(?:[.+_-][a-z0-9]+)*:[a-zA-Z0-9=_-]{32,}$/;
const REGISTERED: Record<string, RegExp> = { sha256: /^[a-f0-9]{64}$/, sha512: /^[a-f0-9]{128}$/ };

export function isSha256Digest(text: string): boolean {
  return SHA256.test(text);
}

/** How text reads as a digest: one regcache stores, a well-formed one of another algorithm, or neither. */
export function digestForm(text: string): 'sha256' | 'other' | 'malformed' {
  if (SHA256.test(text)) return 'sha256';
  if (!ANY_DIGEST.test(text)) return 'malformed';
  const [algorithm = '', encoded = ''] = text.split(':');
  return algorithm !== 'sha256' && (REGISTERED[algorithm]?.test(encoded) ?? true) ? 'other' : 'malformed';
}

/** A digest as people read it in logs and on the status page: its first 12 hex characters (as docker shows image IDs). */
export function shortDigest(digest: string): string {
  return digest.replace(/^sha256:([0-9a-f]{12})[0-9a-f]*$/, '$1');
}
