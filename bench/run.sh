#!/usr/bin/env bash
# `npm run bench`: the pull benchmark (direct vs regcache cold vs warm, RSS, first-request latency), then
# the store benchmark (HIT throughput of a big blob vs reading its content file, concurrent HIT readers'
# RSS, startup with 100k index entries), then the peer benchmark (regcache vs squid with ssl-bump vs a
# docker-registry pull-through mirror vs direct: cold, warm, 20 concurrent pulls, RSS).
# Pull bench options: --runs N, --mb N (or BENCH_RUNS, BENCH_MB).
# Store bench options (environment): BENCH_STORE_MB (1024), BENCH_STORE_RUNS (5), BENCH_STORE_READERS (20),
# BENCH_STORE_ENTRIES (100000).
# Peer bench options (environment): BENCH_PEER_SMALL_MB (150), BENCH_PEER_BIG_MB (1024), BENCH_PEER_RUNS (5),
# BENCH_PEER_BIG_RUNS (3), BENCH_PEER_CLIENTS (20); BENCH_NETEM=1 adds a slow-upstream phase
# (BENCH_PEER_NETEM_RUNS, 5); it also writes its section of docs/benchmarks.md.
# Results: stdout, bench/results/<time>.json, bench/results/store-<time>.json and
# bench/results/peer-<time>.json. Exits non-zero if any benchmark broke (not for a missed target).
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PATH:/usr/sbin:/sbin"

bash test/install-deps.sh
bash bench/install-deps.sh
npm run --silent build
status=0
node --import tsx bench/pull-bench.ts "$@" || status=$?
node --import tsx bench/store-bench.ts || status=$?
node --import tsx bench/peer-bench.ts || status=$?
exit "$status"
