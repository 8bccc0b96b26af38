// The one error a bad setting produces: it names the variable, the value and what would be valid, with an
// example, so that the message alone says how to fix it.

export class ConfigError extends Error {
  constructor(variable: string, value: string, expected: string) {
    super(`${variable}=${JSON.stringify(value)} is not valid: expected ${expected}`);
    this.name = 'ConfigError';
  }
}

/** Where a value came from, for its error: the variable's name and an example of a good value. */
export interface ValueSite {
  name: string;
  example: string;
}

/** `expected`, then "e.g. NAME=example" (quoted when the shell would need it) unless `example` replaces it. */
export function invalid(at: ValueSite, value: string, expected: string, example = `${at.name}=${shellWord(at.example)}`): ConfigError {
  return new ConfigError(at.name, value, `${expected}, e.g. ${example}`);
}

function shellWord(value: string): string {
  return /^[\w@%+=:,./-]+$/.test(value) ? value : `"${value}"`;
}
