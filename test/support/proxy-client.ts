// An HTTPS client that goes through regcache by CONNECT, trusting regcache's CA, like dockerd would.
import { readFileSync } from 'node:fs';
import { ProxyAgent, request, type Dispatcher } from 'undici';

export interface ProxiedResponse {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  body: Buffer;
}

export class ProxyClient {
  readonly agent: ProxyAgent;

  constructor(proxyUrl: string, caFile: string) {
    this.agent = new ProxyAgent({ uri: proxyUrl, requestTls: { ca: readFileSync(caFile, 'utf8') } });
  }

  async fetch(url: string, init: { method?: Dispatcher.HttpMethod; headers?: Record<string, string> } = {}): Promise<ProxiedResponse> {
    // Note: the URL is normalised (dot segments resolved) before it leaves; path tricks go raw instead.
    const res = await request(url, { dispatcher: this.agent, method: init.method ?? 'GET', headers: init.headers });
    const chunks: Buffer[] = [];
    for await (const chunk of res.body) chunks.push(chunk as Buffer);
    return { status: res.statusCode, headers: res.headers, body: Buffer.concat(chunks) };
  }

  close(): Promise<void> {
    return this.agent.close();
  }
}
