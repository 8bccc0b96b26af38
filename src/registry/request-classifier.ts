// What an intercepted request is, from its method and path alone (distribution spec routes).
// Names and digests are validated here so that nothing downstream sees "..", encoded slashes or
// a digest that could escape the store's layout.

export type RegistryRequest =
  | { kind: 'blob'; name: string; digest: string }
  | { kind: 'manifest-by-digest'; name: string; digest: string }
  | { kind: 'manifest-by-tag'; name: string; tag: string }
  | { kind: 'write'; name: string | null } // push, delete: gated by ALLOW_PUSH
  | { kind: 'passthrough'; what: string } // ping, tags/list, referrers, catalog, token endpoints
  | { kind: 'invalid'; status: number; code: string; message: string };

// distribution/reference: path components of lower-case alphanumerics separated by '.', '_', '__' or '-'+.
const NAME = /^[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*(?:\/[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*)*$/;
const TAG = /^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$/;
const SHA256 = /^sha256:[a-f0-9]{64}$/;
const ANY_DIGEST = /^[a-z0-9]+(?:[.+_-][a-z0-9]+)*:[a-zA-Z0-9=_-]{32,}$/;
// Registered algorithms have one exact encoding (OCI image-spec): anything else under their name is
// malformed, not some other algorithm to pass through.
const REGISTERED_DIGEST: Record<string, RegExp> = { sha256: /^[a-f0-9]{64}$/, sha512: /^[a-f0-9]{128}$/ };
const MAX_NAME = 255;

const READ_METHODS = new Set(['GET', 'HEAD']);

export function classify(method: string, rawPath: string): RegistryRequest {
  const pathname = rawPath.split(/[?#]/, 1)[0]!; // where URL ends the path too: "/v2#x" goes upstream as "/v2"
  // Printable ASCII only (Node's parser already refuses the rest; URL would drop tabs and newlines).
  if (!pathname.startsWith('/') || pathname.startsWith('//') || /[^\x21-\x7e]/.test(pathname)) {
    // Absolute-form or "//host/...": new URL(target, origin) would leave the registry's host.
    return invalid(400, 'UNSUPPORTED', 'request target must be a path on this registry');
  }
  // Anywhere, not only under /v2: URL reads "\\" as "/" and resolves dot segments, so "/token/../v2/x" or
  // "/v2\\x" would reach upstream as a /v2 path that was never classified (a PUT: a push past ALLOW_PUSH).
  if (pathname.includes('\\') || pathname.replace(/%2e/gi, '.').split('/').some((seg) => seg === '..' || seg === '.')) {
    return invalid(400, 'NAME_INVALID', 'path contains dot segments or backslashes');
  }
  if (pathname !== '/v2' && !pathname.startsWith('/v2/')) {
    return { kind: 'passthrough', what: 'non-registry' }; // e.g. auth.docker.io/token
  }
  if (/%2f|%2e/i.test(pathname)) {
    return invalid(400, 'NAME_INVALID', 'path contains encoded separators or dots');
  }
  const read = READ_METHODS.has(method);
  if (pathname === '/v2' || pathname === '/v2/') return read ? { kind: 'passthrough', what: 'ping' } : { kind: 'write', name: null };
  if (pathname === '/v2/_catalog') return read ? { kind: 'passthrough', what: 'catalog' } : { kind: 'write', name: null };

  const m = /^\/v2\/(.+)\/(blobs|manifests|tags|referrers)\/(.*)$/.exec(pathname);
  if (!m) return read ? { kind: 'passthrough', what: 'other' } : { kind: 'write', name: null };
  const [, name = '', route, rest = ''] = m;
  if (name.length > MAX_NAME || !NAME.test(name)) return invalid(400, 'NAME_INVALID', 'invalid repository name');
  if (!read) return { kind: 'write', name };

  switch (route) {
    case 'blobs':
      if (rest.startsWith('uploads')) return { kind: 'passthrough', what: 'upload-status' };
      if (SHA256.test(rest)) return { kind: 'blob', name, digest: rest };
      if (otherDigest(rest)) return { kind: 'passthrough', what: 'blob-other-algorithm' };
      return invalid(400, 'DIGEST_INVALID', 'invalid digest');
    case 'manifests':
      if (SHA256.test(rest)) return { kind: 'manifest-by-digest', name, digest: rest };
      if (rest.includes(':')) {
        return otherDigest(rest) ? { kind: 'passthrough', what: 'manifest-other-algorithm' } : invalid(400, 'DIGEST_INVALID', 'invalid digest');
      }
      if (TAG.test(rest)) return { kind: 'manifest-by-tag', name, tag: rest };
      return invalid(400, 'TAG_INVALID', 'invalid tag');
    case 'tags':
      return { kind: 'passthrough', what: 'tags' };
    default:
      return { kind: 'passthrough', what: 'referrers' };
  }
}

/** A well-formed digest of an algorithm other than sha256 (which has its own route). */
function otherDigest(digest: string): boolean {
  if (!ANY_DIGEST.test(digest)) return false;
  const [algorithm = '', encoded = ''] = digest.split(':');
  return algorithm !== 'sha256' && (REGISTERED_DIGEST[algorithm]?.test(encoded) ?? true);
}

function invalid(status: number, code: string, message: string): RegistryRequest {
  return { kind: 'invalid', status, code, message };
}
