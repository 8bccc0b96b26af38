// One process for several unit-tier files (`npm run test:unit`): each file named on the command line is
// imported in turn and its tests run here, one file after another. A process per file would spend more
// CPU starting node and tsx than most unit files take to run.
import path from 'node:path';
import { pathToFileURL } from 'node:url';

for (const file of process.argv.slice(2)) await import(pathToFileURL(path.resolve(file)).href);
