// The configuration a command line runs with, or the exit a bad value gets (exit 2, the message naming
// the variable): what every command but `serve` (which also handles startup errors) starts with.
import { ConfigError, loadConfig, type Config, type ConfigOverrides } from '../config/config.js';
import { fail } from './exit.js';

export function configOrFail(overrides: ConfigOverrides = {}): Config {
  try {
    return loadConfig(process.env, overrides);
  } catch (err) {
    if (err instanceof ConfigError) fail(err.message, 2);
    throw err;
  }
}
