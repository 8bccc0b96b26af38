// Folders are layers (docs/architecture.md, "Layers"); imports point downward only. Checked by
// `npm run check:imports`, part of `npm test`. From the top:
//   entry      src/cli.ts: the only file at the root of src/
//   commands   commands/: serve, ca, cache, prefetch (and what only they use)
//   process    process/: the primary, a worker, the tree's messages, restart backoff
//   assembly   assembly/: a running proxy wired from a Config; the stores' owners; startup checks
//   doors      doors/ (listener, CONNECT, TLS interception, tunnels, the mirror) and admin/ (admin routes,
//              control socket, set-up scripts): side by side, never importing each other
//   registry   registry/: HTTP <-> registry semantics, the one gate for stored content
//   core       cache/*.ts: the fill coordinator, fills, readers, the index, the store interface
//   stores     cache/local/, cache/workers/, cache/s3/: one backend each; they import the core, never each other
//   services   upstream/, auth/, tls/
//   leaves     reference/, config/, telemetry/, ipc/
// A module imports its own folder and any layer below its own.
const LEAVES = '^src/(reference|config|telemetry|ipc)/';
const SERVICES = '^src/(upstream|auth|tls)/';
const STORES = '^src/cache/(local|workers|s3)/';
const CORE = '^src/cache/[^/]+\\.ts$';
const REGISTRY = '^src/registry/';
const DOORS = '^src/(doors|admin)/';
const ASSEMBLY = '^src/assembly/';
const PROCESS = '^src/process/';
const COMMANDS = '^src/commands/';

/** A rule: modules matching `from` import only their own folder and what `allowed` lists. */
function only(name, from, allowed, comment, own = '^src/$1/') {
  return { name, severity: 'error', comment, from: { path: from }, to: { path: '^src/', pathNot: [own, ...allowed] } };
}

/** @type {import('dependency-cruiser').IConfiguration} */
module.exports = {
  forbidden: [
    { name: 'no-circular', severity: 'error', comment: 'A cycle has no bottom: one of its modules imports upward.', from: {}, to: { circular: true } },
    {
      name: 'root-is-the-entry-point',
      severity: 'error',
      comment: 'Nothing but cli.ts lives at the root of src/: every other module belongs to a layer folder.',
      from: { path: '^src/[^/]+\\.ts$', pathNot: '^src/cli\\.ts$' },
      to: {},
    },
    only(
      'leaves-import-leaves',
      '^src/(reference|config|telemetry|ipc)/',
      [LEAVES],
      'references, configuration, logs and metrics, the IPC channel: imported by everything, importing only each other.',
    ),
    only('services-import-leaves', '^src/(upstream|auth|tls)/', [LEAVES], 'upstream/, auth/, tls/: the upstream client knows no cache, the CA no HTTP.'),
    only(
      'core-imports-no-store',
      '^src/cache/[^/]+\\.ts$',
      [CORE, LEAVES],
      'The cache core knows stores only through its interfaces (content-store.ts): it imports no backend, no HTTP, no upstream.',
    ),
    only(
      'stores-apart',
      '^src/cache/(local|workers|s3)/',
      [CORE, LEAVES],
      'Each store is one backend over the core: the stores never import each other.',
      '^src/cache/$1/',
    ),
    only(
      'registry-over-the-cache',
      '^src/(registry)/',
      [CORE, SERVICES, LEAVES],
      'registry/ speaks to the cache through the core (the coordinator), never to a store directly.',
    ),
    only('doors-apart', '^src/(doors|admin)/', [REGISTRY, CORE, SERVICES, LEAVES], 'doors/ and admin/ are doors side by side: assembly/ wires them together.'),
    only(
      'assembly-below-process',
      '^src/(assembly)/',
      [DOORS, REGISTRY, CORE, STORES, SERVICES, LEAVES],
      'assembly/ builds a running proxy; the process tree and the commands start it.',
    ),
    only(
      'process-below-commands',
      '^src/(process)/',
      [ASSEMBLY, DOORS, REGISTRY, CORE, STORES, SERVICES, LEAVES],
      'process/ runs the primary and the workers; only the commands start them.',
    ),
    only(
      'commands-on-top',
      '^src/(commands)/',
      [PROCESS, ASSEMBLY, DOORS, REGISTRY, CORE, STORES, SERVICES, LEAVES],
      'The commands import every layer; only cli.ts imports them.',
    ),
  ],
  options: {
    doNotFollow: { path: 'node_modules' },
    tsPreCompilationDeps: true, // type-only imports count: they are dependencies of the design too
    tsConfig: { fileName: 'tsconfig.json' },
    enhancedResolveOptions: { extensions: ['.ts', '.js'] },
  },
};
