// Why an upstream request got no answer, decided where the failure happens (the destination policy, the
// dialer, the TLS handshake, undici's timers) and carried as a type, never read back out of a message.
import { errors } from 'undici';
import { DestinationRefusedError } from './destination-policy.js';
import { DialError } from './dialer.js';
import { errorCode } from '../telemetry/error-message.js';

/**
 * refused: the destination policy does not connect there; timeout: no connection or no response head in
 * time; tls: the handshake failed (certificate not trusted, wrong name, not TLS); connect: anything else
 * before an answer (refused connection, upstream proxy refusal, an answer that is not HTTP/1.1).
 */
export type UpstreamFailureCause = 'refused' | 'timeout' | 'tls' | 'connect';

export class UpstreamFailure extends Error {
  readonly code: string | undefined;

  constructor(
    readonly failure: UpstreamFailureCause,
    readonly underlying: Error,
  ) {
    super(underlying.message);
    this.name = 'UpstreamFailure';
    this.code = errorCode(underlying);
  }
}

/** The failure an error from the dialer, the handshake or undici stands for (one already typed stays). */
export function upstreamFailure(err: unknown): UpstreamFailure {
  if (err instanceof UpstreamFailure) return err;
  const e = err instanceof Error ? err : new Error(String(err));
  if (e instanceof DestinationRefusedError) return new UpstreamFailure('refused', e);
  if (e instanceof DialError) return new UpstreamFailure(e.cause_ === 'timeout' ? 'timeout' : 'connect', e);
  if (e instanceof errors.ConnectTimeoutError || e instanceof errors.HeadersTimeoutError) return new UpstreamFailure('timeout', e);
  return new UpstreamFailure('connect', e);
}
