// A CA made the way rpardini/docker-registry-proxy's create_ca_cert.sh makes /ca: the same openssl steps
// (a 4096-bit key encrypted with -des3 and its fixed passphrase, a self-signed certificate with its IA
// extensions and subject), run by bash and the machine's openssl. `traditional` writes the key as
// openssl 1.1 did (BEGIN RSA PRIVATE KEY with a DEK-Info header), which older rpardini images left behind.
import { mkdir } from 'node:fs/promises';
import path from 'node:path';
import { run } from '../harness/proc.js';

export const RPARDINI_PASSPHRASE = 'foobar';

export async function makeRpardiniCa(dir: string, opts: { passphrase?: string; traditional?: boolean } = {}): Promise<{ certFile: string; keyFile: string }> {
  await mkdir(dir, { recursive: true });
  const script = `set -Eeuo pipefail
cd "$1"
CN_CA="DockerMirrorBox CA Root $(hostname -f) $(date "+%Y.%m.%d %H:%M")"
CN_CA=\${CN_CA:0:64}
openssl genrsa -des3 ${opts.traditional ? '-traditional ' : ''}-passout "pass:$2" -out ca.key 4096
openssl req -new -x509 -days 1300 -sha256 -key ca.key -out ca.crt -passin "pass:$2" -subj "/C=NL/ST=Noord Holland/L=Amsterdam/O=ME/OU=IT/CN=\${CN_CA}" -extensions IA -config <(
cat <<-EOF
[req]
distinguished_name = dn
[dn]
[IA]
basicConstraints = critical,CA:TRUE
keyUsage = critical, digitalSignature, cRLSign, keyCertSign
subjectKeyIdentifier = hash
EOF
)
echo 01 > ca.srl
`;
  const r = await run('bash', ['-c', script, 'create_ca_cert', dir, opts.passphrase ?? RPARDINI_PASSPHRASE], {
    env: { PATH: process.env.PATH ?? '/usr/bin:/bin' },
    timeoutMs: 120_000,
  });
  if (r.code !== 0) throw new Error(`openssl (rpardini's CA steps) failed:\n${r.stderr}`);
  return { certFile: path.join(dir, 'ca.crt'), keyFile: path.join(dir, 'ca.key') };
}
