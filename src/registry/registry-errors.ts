// The answers regcache gives itself on a registry's API, in the distribution spec's JSON error shape
// ({"errors":[{"code","message","detail"}]}). Each kind of refusal has one distribution code and one
// status, in this table and nowhere else.
import type { ServerResponse } from 'node:http';

export const REGISTRY_ERRORS = {
  'target-unsupported': { status: 400, code: 'UNSUPPORTED' }, // a request target that is not a path on this registry
  'name-invalid': { status: 400, code: 'NAME_INVALID' },
  'digest-invalid': { status: 400, code: 'DIGEST_INVALID' },
  'tag-invalid': { status: 400, code: 'TAG_INVALID' },
  unauthorized: { status: 401, code: 'UNAUTHORIZED' }, // a door of regcache's own (the mirror's users)
  denied: { status: 403, code: 'DENIED' }, // a registry or destination regcache does not serve
  'write-refused': { status: 405, code: 'UNSUPPORTED' }, // push or delete without ALLOW_PUSH
  internal: { status: 500, code: 'UNKNOWN' },
  'upstream-unreachable': { status: 502, code: 'UNAVAILABLE' },
  'upstream-timeout': { status: 504, code: 'UNAVAILABLE' },
  'upstream-too-large': { status: 502, code: 'UNAVAILABLE' }, // a manifest, tags list or token past regcache's bound
  'store-unavailable': { status: 503, code: 'UNAVAILABLE' }, // CACHE_STORE's bucket cannot be reached or refuses
} as const satisfies Record<string, { status: number; code: string }>;

export type RegistryErrorKind = keyof typeof REGISTRY_ERRORS;

/** Answers with the error's status and body; a response already under way is cut instead. */
export function sendRegistryError(res: ServerResponse, kind: RegistryErrorKind, message: string, extra: Record<string, string> = {}): void {
  if (res.headersSent) {
    res.destroy();
    return;
  }
  const { status, code } = REGISTRY_ERRORS[kind];
  const body = JSON.stringify({ errors: [{ code, message, detail: null }] });
  res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body), ...extra });
  res.end(body);
}
