#!/usr/bin/env bash
# The whole test suite: installs what the tests drive, builds, then runs every test file one at a time
# (end-to-end files start daemons; running them serially keeps ports, disk and CPU predictable).
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PATH:/usr/sbin:/sbin"

bash test/install-deps.sh
npm run --silent build
npm run --silent typecheck
npm run --silent check:imports # imports point downward only (.dependency-cruiser.cjs)
npx prettier --check --log-level warn . || { echo 'Formatting differs: run npm run format' >&2; exit 1; }
npm run --silent lint # typescript-eslint: no floating or misused promises, line length (eslint.config.js)

files=("$@")
[ ${#files[@]} -gt 0 ] || files=(test/*.test.ts)
exec node --import tsx --test --test-concurrency=1 --test-reporter=spec "${files[@]}"
