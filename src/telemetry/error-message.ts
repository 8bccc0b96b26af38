// Whatever was thrown, as the text of a log line or an answer. JavaScript can throw anything (a string, an
// object from a library's callback), and `(err as Error).message` reads undefined from those: this never
// does. An errno error without its code in the message gets it appended (ENOSPC says more than the text).
export function errorMessage(err: unknown): string {
  if (err instanceof Error) {
    const code = errorCode(err);
    return typeof code === 'string' && !err.message.includes(code) ? `${err.message} (${code})` : err.message;
  }
  if (typeof err === 'string') return err;
  try {
    return JSON.stringify(err) ?? String(err);
  } catch {
    return String(err); // a cycle: JSON cannot say it
  }
}

/** An errno-style code (ENOENT, ECONNRESET) when the thrown value has one. */
export function errorCode(err: unknown): string | undefined {
  const code = (err as { code?: unknown } | null)?.code;
  return typeof code === 'string' ? code : undefined;
}
