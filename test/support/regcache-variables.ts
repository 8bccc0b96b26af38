// The variables regcache reads, from its source: what a deploy file may pass it (a name not in the set is
// a typo) and what docker-compose.yaml must pass through.
import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import path from 'node:path';

const CONFIG_SOURCE = path.resolve(import.meta.dirname, '../../src/config/config.ts');

// The AWS SDK's own variables (credentials and region chain), which regcache passes to it unread.
export const SDK_VARIABLES = [
  'AWS_ACCESS_KEY_ID',
  'AWS_SECRET_ACCESS_KEY',
  'AWS_SESSION_TOKEN',
  'AWS_REGION',
  'AWS_PROFILE',
  'AWS_ROLE_ARN',
  'AWS_WEB_IDENTITY_TOKEN_FILE',
];

/** Every variable src/config/config.ts reads: get('NAME') and env.NAME. */
export async function configVariables(): Promise<Set<string>> {
  const source = await readFile(CONFIG_SOURCE, 'utf8');
  const names = [...source.matchAll(/\bget\('([A-Za-z0-9_]+)'\)|\benv\.([A-Z0-9_]+)/g)].map((m) => m[1] ?? m[2]!);
  assert.ok(
    names.includes('CACHE_STORE') && names.includes('S3_ENDPOINT') && names.includes('AUTH_REGISTRIES_DELIMITER'),
    'config.ts still reads its variables as get(NAME) and env.NAME',
  );
  return new Set(names);
}

/** What regcache or the AWS SDK reads. */
export async function regcacheVariables(): Promise<Set<string>> {
  return new Set([...(await configVariables()), ...SDK_VARIABLES]);
}
