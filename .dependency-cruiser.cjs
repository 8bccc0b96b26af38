// Imports point downward only (docs/architecture.md, "Layers"): checked by `npx depcruise src` in
// test/run.sh before the tests. From the top:
//   commands   cli.ts, cache-commands.ts, prefetch-command.ts
//   assembly   proxy.ts, startup-checks.ts, the stores' owners (cache-owner.ts, bucket-owner.ts)
//   doors      server/ (listeners, CONNECT, TLS interception, mirror), admin/ (admin routes, control socket)
//   registry   registry/ (HTTP <-> registry semantics)
//   services   cache/, upstream/, auth/, tls/
//   leaves     reference/ and the single files at the root of src/ (log, config, metrics, access log, ...)
// A module may import its own directory and any layer below it; the doors and the services do not import
// each other sideways.
const LEAVES = '^src/(reference/|(log|config|metrics|access-log|address-ranges|version|format-bytes|cli-exit|transfer-progress|process-channel|restart-backoff)\\.ts$)';
const COMMANDS = '^src/(cli|cache-commands|prefetch-command)\\.ts$';
const ASSEMBLY = '^src/(proxy|startup-checks|startup|cache-owner|bucket-owner|primary|worker|process-tree)\\.ts$';

/** @type {import('dependency-cruiser').IConfiguration} */
module.exports = {
  forbidden: [
    {
      name: 'no-circular',
      severity: 'error',
      comment: 'A cycle has no bottom: one of its modules imports upward.',
      from: {},
      to: { circular: true },
    },
    {
      name: 'leaves-import-leaves',
      severity: 'error',
      comment: 'references, config, log, metrics, the access log: imported by everything, importing nothing of the layers above.',
      from: { path: LEAVES },
      to: { path: '^src/', pathNot: LEAVES },
    },
    {
      name: 'services-import-leaves',
      severity: 'error',
      comment: 'cache/, upstream/, auth/ and tls/ import their own directory and the leaves: the store knows no HTTP, the upstream client no cache.',
      from: { path: '^src/(cache|upstream|auth|tls)/' },
      to: { path: '^src/', pathNot: ['^src/$1/', LEAVES] },
    },
    {
      name: 'registry-below-doors',
      severity: 'error',
      comment: 'registry/ translates HTTP to the cache and the upstream; the doors (server/, admin/) call it, never the reverse.',
      from: { path: '^src/registry/' },
      to: { path: ['^src/(server|admin)/', ASSEMBLY, COMMANDS] },
    },
    {
      name: 'doors-apart',
      severity: 'error',
      comment: 'server/ and admin/ are doors side by side: proxy.ts wires them together.',
      from: { path: '^src/(server|admin)/' },
      to: { path: ['^src/(server|admin)/', ASSEMBLY, COMMANDS], pathNot: '^src/$1/' },
    },
    {
      name: 'assembly-below-commands',
      severity: 'error',
      comment: 'proxy.ts assembles a running proxy; only the commands start one.',
      from: { path: ASSEMBLY },
      to: { path: COMMANDS },
    },
    {
      name: 'commands-on-top',
      severity: 'error',
      comment: 'The command modules are entry points: cli.ts registers the others.',
      from: { path: '^src/', pathNot: '^src/cli\\.ts$' },
      to: { path: COMMANDS },
    },
  ],
  options: {
    doNotFollow: { path: 'node_modules' },
    tsPreCompilationDeps: true, // type-only imports count: they are dependencies of the design too
    tsConfig: { fileName: 'tsconfig.json' },
    enhancedResolveOptions: { extensions: ['.ts', '.js'] },
  },
};
