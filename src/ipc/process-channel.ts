// Requests, answers and notes between the processes of one regcache (the primary and its workers, with
// WORKERS > 1) over Node's IPC channel: a worker's store asks the primary, the primary relays the progress
// of fills and asks the workers for their metrics. Messages are JSON and never carry content bytes; Node's
// own cluster messages on the same channel are left alone (they never reach 'message' listeners).
import { errorMessage } from '../telemetry/error-message.js';

/** One end of the IPC channel: `process` in a worker, a cluster `Worker` in the primary, or a test's fake. */
export interface MessagePort {
  send(message: unknown, callback: (error: Error | null) => void): unknown;
  on(event: 'message', listener: (message: unknown) => void): unknown;
}

type Envelope =
  | { regcache: 'request'; id: number; method: string; params: unknown }
  | { regcache: 'answer'; id: number; result?: unknown; error?: string }
  | { regcache: 'note'; method: string; params: unknown };

export class ChannelClosedError extends Error {
  override name = 'ChannelClosedError';
}

/** Called once with the answer (or the error), synchronously as it arrives: in order with the notes. */
export type AnswerCallback<T> = (error: Error | null, result?: T) => void;

interface Waiting {
  callback: AnswerCallback<unknown>;
  timer: NodeJS.Timeout | null;
}

export class ProcessChannel {
  private nextId = 1;
  private readonly waiting = new Map<number, Waiting>();
  private readonly handlers = new Map<string, (params: never) => unknown>();
  private readonly listeners = new Map<string, (params: never) => void>();
  private closedBy: Error | null = null;

  constructor(private readonly port: MessagePort) {
    port.on('message', (message) => this.receive(message));
  }

  get closed(): boolean {
    return this.closedBy !== null;
  }

  /** Asks the other end; rejects with its error, a ChannelClosedError, or after timeoutMs (if given). */
  request<T>(method: string, params: unknown = null, timeoutMs?: number): Promise<T> {
    return new Promise<T>((resolve, reject) => this.call<T>(method, params, (err, result) => (err ? reject(err) : resolve(result as T)), timeoutMs));
  }

  /**
   * As request, but the callback runs as soon as the answer is read, before any note sent after it is
   * delivered (a promise would resolve later): for state the next notes refer to.
   */
  call<T>(method: string, params: unknown, callback: AnswerCallback<T>, timeoutMs?: number): void {
    if (this.closedBy) {
      const closed = this.closedBy;
      queueMicrotask(() => callback(closed));
      return;
    }
    const id = this.nextId++;
    const timer = timeoutMs === undefined ? null : setTimeout(() => this.settle(id, new Error(`no answer to ${method} within ${timeoutMs} ms`)), timeoutMs);
    this.waiting.set(id, { callback: callback as AnswerCallback<unknown>, timer });
    this.send({ regcache: 'request', id, method, params });
  }

  /** Tells the other end something that needs no answer (lost if the channel is closed). */
  notify(method: string, params: unknown = null): void {
    if (!this.closedBy) this.send({ regcache: 'note', method, params });
  }

  /** Answers the other end's requests for `method` (a thrown error or rejection is sent back as its message). */
  handle<P>(method: string, handler: (params: P) => unknown): void {
    this.handlers.set(method, handler as (params: never) => unknown);
  }

  /** Receives the other end's notes for `method`. */
  on<P>(method: string, listener: (params: P) => void): void {
    this.listeners.set(method, listener as (params: never) => void);
  }

  /** The other end is gone: every request waiting for it fails. */
  close(reason = 'the other process is gone'): void {
    if (this.closedBy) return;
    this.closedBy = new ChannelClosedError(reason);
    for (const id of [...this.waiting.keys()]) this.settle(id, this.closedBy);
  }

  private send(envelope: Envelope): void {
    try {
      this.port.send(envelope, (err) => {
        if (err) this.close(`sending failed: ${err.message}`);
      });
    } catch (err) {
      this.close(`sending failed: ${errorMessage(err)}`);
    }
  }

  private settle(id: number, error: Error | null, result?: unknown): void {
    const waiting = this.waiting.get(id);
    if (!waiting) return;
    this.waiting.delete(id);
    if (waiting.timer) clearTimeout(waiting.timer);
    waiting.callback(error, result);
  }

  private receive(message: unknown): void {
    if (typeof message !== 'object' || message === null || !('regcache' in message)) return;
    const envelope = message as Envelope;
    switch (envelope.regcache) {
      case 'answer':
        this.settle(envelope.id, envelope.error === undefined ? null : new Error(envelope.error), envelope.result);
        return;
      case 'note':
        this.listeners.get(envelope.method)?.(envelope.params as never);
        return;
      case 'request':
        this.answer(envelope.id, envelope.method, envelope.params);
    }
  }

  // A handler that answers at once (not a promise) is answered in the same tick: nothing it changed can be
  // reported to the other end ahead of the answer.
  private answer(id: number, method: string, params: unknown): void {
    const reply = (result: unknown) => {
      if (!this.closedBy) this.send({ regcache: 'answer', id, result: result === undefined ? null : result });
    };
    const fail = (err: unknown) => {
      if (!this.closedBy) this.send({ regcache: 'answer', id, error: err instanceof Error ? err.message : String(err) });
    };
    const handler = this.handlers.get(method);
    if (!handler) return fail(new Error(`no handler for ${method}`));
    let result: unknown;
    try {
      result = handler(params as never);
    } catch (err) {
      return fail(err);
    }
    if (result instanceof Promise) result.then(reply, fail);
    else reply(result);
  }
}
