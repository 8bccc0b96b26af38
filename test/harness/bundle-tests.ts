// The e2e test files as one ESM file each (esbuild: the file, the harness and the src/ modules it imports;
// packages stay imports), so a file's process starts with plain node instead of tsx. Node 20 runs tsx's
// module hooks on a thread of their own: 0.42 s of CPU per process before the first import, then a round
// trip to that thread for every module (decisions #135). Each module keeps its own location:
// `import.meta.url`, `import.meta.dirname` and `import.meta.filename` are its source file's, so paths to
// dist/, fixtures and scripts resolve as under tsx; source maps point stack traces at the .ts lines.
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import { build, type Plugin } from 'esbuild';

const ROOT = path.resolve(import.meta.dirname, '../..');

const sourceLocation: Plugin = {
  name: 'source-location',
  setup(b) {
    b.onLoad({ filter: /\.ts$/ }, async (args) => {
      const source = await readFile(args.path, 'utf8');
      const contents = source
        .replaceAll('import.meta.dirname', JSON.stringify(path.dirname(args.path)))
        .replaceAll('import.meta.filename', JSON.stringify(args.path))
        .replaceAll('import.meta.url', JSON.stringify(pathToFileURL(args.path).href));
      return { contents, loader: 'ts' };
    });
  },
};

/** Bundles `files` (relative to the repository) under outDir; each file's bundle, by its name. */
export async function bundleTests(files: string[], outDir: string): Promise<Map<string, string>> {
  await build({
    entryPoints: files.map((f) => path.join(ROOT, f)),
    outdir: outDir,
    outbase: ROOT,
    outExtension: { '.js': '.mjs' },
    bundle: true,
    platform: 'node',
    format: 'esm',
    target: 'node20',
    packages: 'external',
    keepNames: true, // a class's or function's name is what the source says (error names, logs)
    sourcemap: 'inline',
    logLevel: 'error',
    plugins: [sourceLocation],
  });
  return new Map(files.map((f) => [f, path.join(outDir, f.replace(/\.ts$/, '.mjs'))]));
}
