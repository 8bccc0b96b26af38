#!/usr/bin/env node
// The regcache command line: the entry point. The program and its commands are commands/program.ts.
import { regcacheProgram } from './commands/program.js';

await regcacheProgram().parseAsync(process.argv);
