#!/usr/bin/env bash
# `npm run bench`: the pull benchmark (direct vs regcache cold vs warm, RSS, first-request latency), then
# the store benchmark (HIT throughput of a big blob vs reading its content file, concurrent HIT readers'
# RSS, startup with 100k index entries).
# Pull bench options: --runs N, --mb N (or BENCH_RUNS, BENCH_MB).
# Store bench options (environment): BENCH_STORE_MB (1024), BENCH_STORE_RUNS (5), BENCH_STORE_READERS (20),
# BENCH_STORE_ENTRIES (100000).
# Results: stdout, bench/results/<time>.json and bench/results/store-<time>.json. Exits non-zero if
# either benchmark broke (not for a missed target).
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PATH:/usr/sbin:/sbin"

bash test/install-deps.sh
npm run --silent build
status=0
node --import tsx bench/pull-bench.ts "$@" || status=$?
node --import tsx bench/store-bench.ts || status=$?
exit "$status"
