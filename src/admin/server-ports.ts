// Where a running server listens, as it answers over the control socket (`ports`): how `regcache
// prefetch` finds the mirror listener wherever MIRROR_PORT put it, without being told.
import { askControl } from './control-socket.js';

export const PORTS_COMMAND = 'ports';
/** The control socket's status summary (telemetry/status-report.ts): what `regcache status` prints. */
export const STATUS_COMMAND = 'status';

export interface ServerPorts {
  proxy: number;
  mirror: { port: number; tls: boolean } | null; // null: the mirror is off (MIRROR_PORT=0)
  admin: number | null; // ADMIN_PORT, when on
}

/** The running server's ports; null when no server holds the cache directory. */
export async function askServerPorts(cacheDir: string): Promise<ServerPorts | null> {
  const answer = await askControl(cacheDir, { cmd: PORTS_COMMAND, args: {} });
  if (answer === null) return null;
  if (!answer.ok) throw new Error(answer.error);
  return answer.result as ServerPorts;
}
