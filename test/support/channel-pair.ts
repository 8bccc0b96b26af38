// Two ends of an IPC channel in one process, for the worker protocol without processes: messages are JSON
// copies, delivered in order on a later turn of the event loop, as Node's IPC delivers them.
import { EventEmitter } from 'node:events';
import { ProcessChannel, type MessagePort } from '../../src/ipc/process-channel.js';

/** The primary's end, the worker's end, and a cut (both ends closed, as when a worker dies). */
export function channelPair(): [ProcessChannel, ProcessChannel, () => void] {
  const ends = [new EventEmitter(), new EventEmitter()];
  let open = true;
  const port = (self: EventEmitter, other: EventEmitter): MessagePort => ({
    send(message, callback) {
      if (!open) return callback(new Error('channel closed'));
      const copy: unknown = JSON.parse(JSON.stringify(message));
      setImmediate(() => open && other.emit('message', copy));
      callback(null);
    },
    on: (event, listener) => self.on(event, listener),
  });
  const a = new ProcessChannel(port(ends[0]!, ends[1]!));
  const b = new ProcessChannel(port(ends[1]!, ends[0]!));
  const cut = () => {
    open = false;
    a.close();
    b.close();
  };
  return [a, b, cut];
}
