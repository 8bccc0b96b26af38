#!/usr/bin/env bash
# `npm run bench`: the pull benchmark (direct vs regcache cold vs warm, RSS, first-request latency).
# Options: --runs N, --mb N (or BENCH_RUNS, BENCH_MB). Results: stdout and bench/results/<time>.json.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PATH:/usr/sbin:/sbin"

bash test/install-deps.sh
npm run --silent build
exec node --import tsx bench/pull-bench.ts "$@"
