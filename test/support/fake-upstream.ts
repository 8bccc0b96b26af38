// A FakeRegistry at registry.test under a CA of its own, and regcache processes routed to it (CONNECT_TO)
// and trusting that CA: the set-up of the tests that need upstream behaviour a real registry never shows.
import { createTestCA, type TestCA } from '../harness/pki.js';
import { startRegcache, type Regcache, type RegcacheOptions } from '../harness/regcache.js';
import { FakeRegistry } from './fake-registry.js';
import { ProxyClient } from './proxy-client.js';

export class FakeUpstream {
  readonly upstream = new FakeRegistry();
  ca!: TestCA;
  env!: Record<string, string>;

  async start(dir: string, caName: string): Promise<void> {
    this.ca = await createTestCA(dir, caName);
    await this.upstream.start(await this.ca.issue(['registry.test'], dir, 'upstream'));
    this.env = { ADDITIONAL_REGISTRIES: 'registry.test', UPSTREAM_CA_FILE: this.ca.certFile, CONNECT_TO: `registry.test:443:127.0.0.1:${this.upstream.port}` };
  }

  /** A regcache routed to the fake upstream (opts.env on top), and a client going through it. */
  async regcache(opts: RegcacheOptions): Promise<{ proxy: Regcache; client: ProxyClient }> {
    const proxy = await startRegcache({ ...opts, env: { ...this.env, ...opts.env } });
    return { proxy, client: new ProxyClient(proxy.proxyUrl, proxy.caFile) };
  }
}
