// How every command line path ends on an error: one line on stderr, an exit code (2: bad usage or
// configuration, 1: the operation failed).
export function fail(message: string, code = 2): never {
  process.stderr.write(`regcache: ${message}\n`);
  process.exit(code);
}
