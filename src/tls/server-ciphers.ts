// The cipher order of regcache's own TLS servers (the hosts it intercepts, the mirror): TLS 1.3's
// AES-128-GCM first, as Go's and BoringSSL's servers choose on machines with AES instructions. Node's
// default puts AES-256-GCM first and its servers choose in their own order, so Go clients (dockerd,
// containerd, skopeo) got AES-256 from regcache where the registry itself gives them AES-128: 1.6x the
// cipher's CPU per byte on both ends (openssl speed here: 4.7 against 3.0 GB/s). Both are TLS 1.3's own
// suites; TLS 1.2 keeps Node's list. decisions.md #128.
import tls from 'node:tls';

const TLS13_PREFERRED = ['TLS_AES_128_GCM_SHA256', 'TLS_AES_256_GCM_SHA384', 'TLS_CHACHA20_POLY1305_SHA256'];

/** Options for tls.createSecureContext or a TLS server: the suites above in that order, chosen by the server. */
export const SERVER_CIPHERS = {
  ciphers: [...TLS13_PREFERRED, ...tls.DEFAULT_CIPHERS.split(':').filter((c) => !c.startsWith('TLS_'))].join(':'),
  honorCipherOrder: true,
} as const;
