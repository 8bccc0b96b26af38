// The auth bench's attackers, in a process of their own (forked by auth-bench.ts, so that their CPU is
// not the measuring client's): `clients` loops, each sending a wrong password after the other, a new
// connection per attempt, distinct random passwords (no attempt can be answered from a cache), every
// other one for a known user. They come from one address, one address per client, or a new address
// per attempt (127.0.0.0/8 is all loopback), until told to stop; then they drop the attempts still
// waiting (a throttled address's can wait minutes) and report what they got.
import crypto from 'node:crypto';
import net from 'node:net';

export interface AttackPlan {
  door: 'proxy' | 'mirror'; // CONNECT with Proxy-Authorization, or GET /v2/ with Authorization
  port: number;
  connectTarget: string; // host:port the CONNECTs name
  clients: number;
  addresses: AttackAddresses;
  addressBlock: number; // 0 to 11: each run of attackers comes from addresses of its own
  knownUser: string;
}

export type AttackAddresses = 'one' | 'per-client' | 'per-attempt';

export interface AttackResult {
  attempts: number;
  byStatus: Record<string, number>; // status code of each answer, or what ended the attempt (ECONNRESET, closed, timeout)
  seconds: number;
}

const ATTEMPT_TIMEOUT_MS = 30_000;

/** Where attempt `n` of client `client` comes from; never 127.0.0.1, the measured client's address. */
function sourceAddress(plan: AttackPlan, client: number, n: number): string {
  const block = plan.addressBlock;
  if (plan.addresses === 'one') return `127.0.0.${2 + block}`;
  if (plan.addresses === 'per-client') return `127.0.${2 + block}.${client + 1}`;
  return `127.${64 + 16 * block + ((n >> 16) % 16)}.${(n >> 8) & 255}.${1 + ((n & 255) % 254)}`;
}

const open = new Set<net.Socket>(); // attempts waiting for their answer

function attempt(plan: AttackPlan, localAddress: string, authorization: string): Promise<string> {
  return new Promise((resolve) => {
    let settled = false;
    let head = '';
    const socket = net.connect({ port: plan.port, host: '127.0.0.1', localAddress });
    open.add(socket);
    const done = (status: string): void => {
      if (settled) return;
      settled = true;
      open.delete(socket);
      socket.destroy();
      resolve(status);
    };
    socket.setTimeout(ATTEMPT_TIMEOUT_MS, () => done('timeout'));
    socket.on('connect', () => {
      socket.write(
        plan.door === 'proxy'
          ? `CONNECT ${plan.connectTarget} HTTP/1.1\r\nHost: ${plan.connectTarget}\r\nProxy-Authorization: ${authorization}\r\n\r\n`
          : `GET /v2/ HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: ${authorization}\r\nConnection: close\r\n\r\n`,
      );
    });
    socket.on('data', (chunk: Buffer) => {
      head += chunk.toString('latin1');
      const line = head.indexOf('\r\n');
      if (line >= 0) done(/^HTTP\/1\.[01] (\d{3})/.exec(head.slice(0, line))?.[1] ?? 'not HTTP');
    });
    socket.on('error', (err: NodeJS.ErrnoException) => done(err.code ?? 'error'));
    socket.on('close', () => done('closed'));
  });
}

async function attack(plan: AttackPlan, stopped: () => boolean): Promise<AttackResult> {
  const started = performance.now();
  const byStatus: Record<string, number> = {};
  let attempts = 0;
  await Promise.all(
    Array.from({ length: plan.clients }, async (_, client) => {
      while (!stopped()) {
        const user = attempts % 2 === 0 ? plan.knownUser : `nobody-${crypto.randomBytes(4).toString('hex')}`;
        const authorization = 'Basic ' + Buffer.from(`${user}:${crypto.randomBytes(12).toString('base64')}`).toString('base64');
        const status = await attempt(plan, sourceAddress(plan, client, attempts), authorization);
        if (stopped()) break; // cut short by the stop, not answered
        attempts++;
        byStatus[status] = (byStatus[status] ?? 0) + 1;
      }
    }),
  );
  return { attempts, byStatus, seconds: (performance.now() - started) / 1000 };
}

// Runs only when forked: the plan arrives first, "stop" later.
if (process.send) {
  let stop = false;
  let running: Promise<AttackResult> | null = null;
  process.on('message', (message: AttackPlan | 'stop') => {
    if (message === 'stop') {
      stop = true;
      for (const socket of open) socket.destroy();
      void running?.then((result) => process.send!(result, () => process.exit(0)));
    } else {
      running = attack(message, () => stop);
      process.send!('started');
    }
  });
}
