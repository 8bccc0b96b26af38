#!/usr/bin/env bash
# The whole test suite (npm test): installs what the tests drive, then test/harness/run-tests.ts builds, runs
# the checks and every test file, end-to-end files side by side (test/README.md). Arguments go to the runner:
# test files to run just those, --jobs N.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PATH:/usr/sbin:/sbin"

bash test/install-deps.sh
exec node --import tsx test/harness/run-tests.ts "$@"
