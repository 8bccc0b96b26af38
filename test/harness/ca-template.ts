// One CA and leaf key for a whole test run, copied into the CA_DIR of each regcache a test starts on a
// CA_DIR that does not exist yet: making them is two RSA key generations (~0.3 s of CPU, up to ~0.5), and
// the suite starts regcache more than a hundred times. The template is made by regcache's own code
// (loadOrCreateCa, loadOrCreateLeafKey), which lets the test processes of a run that reach it at once
// agree on one CA. Tests of CA creation and of CA_DIR faults give a CA_DIR of their own that exists, or
// call that code directly (certificates.test.ts, faults.test.ts).
import { rmSync } from 'node:fs';
import { copyFile, mkdir, stat } from 'node:fs/promises';
import path from 'node:path';
import { loadOrCreateCa } from '../../src/tls/certificate-authority.js';
import { LEAF_KEY_FILE, loadOrCreateLeafKey } from '../../src/tls/leaf-key.js';
import { makeTmpDir } from './tmp.js';

/** Set by run-tests.ts: an empty directory the run's first test process to start regcache fills. */
export const CA_TEMPLATE_ENV = 'REGCACHE_TEST_CA_TEMPLATE';

let template: Promise<string> | undefined;

function caTemplate(): Promise<string> {
  template ??= (async () => {
    // A file run alone (not through run-tests.ts), or a bench, makes its own, once, removed when it exits.
    let dir = process.env[CA_TEMPLATE_ENV];
    if (dir === undefined) {
      const own = await makeTmpDir('regcache-ca-template');
      process.once('exit', () => rmSync(own, { recursive: true, force: true }));
      dir = own;
    }
    await loadOrCreateCa(dir);
    await loadOrCreateLeafKey(dir, null);
    return dir;
  })();
  return template;
}

/** Copies the run's CA into caDir unless caDir exists (a test's own CA, or one kept across restarts). */
export async function seedCaDir(caDir: string): Promise<void> {
  if (
    await stat(caDir).then(
      () => true,
      () => false,
    )
  )
    return;
  const from = await caTemplate();
  await mkdir(caDir, { recursive: true, mode: 0o700 });
  await Promise.all(['ca.crt', 'ca.key', LEAF_KEY_FILE].map((f) => copyFile(path.join(from, f), path.join(caDir, f))));
}
