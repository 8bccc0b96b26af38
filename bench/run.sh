#!/usr/bin/env bash
# `npm run bench`: the pull benchmark (direct vs regcache cold vs warm, RSS, first-request latency), then
# the store benchmark (HIT throughput of a big blob vs reading its content file, regcache's CPU per byte
# with VERIFY_ON_READ on and off, concurrent HIT readers' RSS, startup with 100k index entries), then the
# peer benchmark (regcache vs squid with ssl-bump vs a
# docker-registry pull-through mirror vs direct: cold, warm, 20 concurrent pulls, RSS).
# Pull bench options: --runs N, --mb N (or BENCH_RUNS, BENCH_MB).
# Store bench options (environment): BENCH_STORE_MB (1024), BENCH_STORE_RUNS (5), BENCH_STORE_READERS (20),
# BENCH_STORE_ENTRIES (100000).
# Then the CPU bench: regcache's CPU per byte of one blob on the tunnel, cold and warm paths (with and
# without VERIFY_ON_READ) beside a bare Node relay and openssl speed's AES-256-GCM and SHA-256 floors.
# Options (environment): BENCH_CPU_MB (512), BENCH_CPU_RUNS (5), BENCH_CPU_COMPARE (other builds).
# Peer bench options (environment): BENCH_PEER_SMALL_MB (150), BENCH_PEER_BIG_MB (1024), BENCH_PEER_RUNS (5),
# BENCH_PEER_BIG_RUNS (3), BENCH_PEER_CLIENTS (20); BENCH_NETEM=1 adds a slow-upstream phase
# (BENCH_PEER_NETEM_RUNS, 5); it also writes its section of docs/benchmarks.md.
# Then the warm split: a big warm pull direct and as a HIT, its CPU split between skopeo and the server
# (BENCH_SPLIT_MB (1024), BENCH_SPLIT_RUNS (5); see bench/warm-split.ts).
# Last, the load bench: HIT requests/s and p99 of a small cached manifest (mirror port with wrk, intercepted
# path with a node generator) beside docker-registry, and 500 concurrent connections mixing HITs, MISSes
# and tunnels. Options (environment): BENCH_LOAD_SECONDS (30), BENCH_LOAD_CONNECTIONS (500),
# BENCH_LOAD_HIT_SECONDS (10), BENCH_LOAD_HIT_CONNECTIONS (50), BENCH_LOAD_RSS_MB (300); see bench/load-bench.ts.
# Then the workers bench: warm aggregate MB/s and HIT requests/s with WORKERS=1 and WORKERS=2 (and the
# machine's CPU count when it has more) side by side, and the load bench's 500-connection load with each,
# for the set-up latency of new tunnels. Options (environment): BENCH_WORKERS ("1 2"), BENCH_WORKERS_BLOB_MB
# (256), BENCH_WORKERS_CLIENTS (4), BENCH_WORKERS_WARM_SECONDS (15) and BENCH_LOAD_*; see bench/workers-bench.ts.
# After it, the auth bench: an authenticated client's p50/p99 with no attack and while 50 clients send
# wrong passwords (bcrypt PROXY_AUTH), through the proxy and the mirror. Options (environment):
# BENCH_AUTH_SECONDS (10), BENCH_AUTH_CLIENTS (50), BENCH_AUTH_COST (10); see bench/auth-bench.ts.
# Last, the S3 bench: the S3 store (CACHE_STORE on a Ceph RGW the harness starts) beside the local store, one
# big blob (curl) and a small image (skopeo): cold, warm on the same replica, a second replica's warm pull,
# and a follower on another replica during a fill; regcache's CPU per byte and peak RSS, radosgw's and the
# OSD's CPU. Options (environment): BENCH_S3_MB (256), BENCH_S3_IMAGE_MB (50), BENCH_S3_RUNS (5),
# BENCH_S3_FILL_LEASE (regcache's default); see bench/s3-bench.ts.
# Last, the start bench: npm start to a healthy regcache with dist/ built, beside the previous scripts and
# node dist/cli.js serve; see bench/start-bench.ts.
# Results: stdout, bench/results/<time>.json, store-, cpu-, peer-, load-, workers-, auth- and s3-<time>.json, and
# the store, cpu, peer, load, workers, auth and s3 sections of docs/benchmarks.md. Exits non-zero if a benchmark broke (not for a missed target) or the
# load or auth bench saw any error.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PATH:/usr/sbin:/sbin"

bash test/install-deps.sh --bench
npm run --silent build
status=0
node --import tsx bench/pull-bench.ts "$@" || status=$?
node --import tsx bench/store-bench.ts || status=$?
node --import tsx bench/cpu-bench.ts || status=$?
node --import tsx bench/peer-bench.ts || status=$?
node --import tsx bench/warm-split.ts || status=$? # a warm pull's CPU: skopeo's and the server's, direct and HIT
# The load bench's 500 connections need about 4 descriptors each between its generator and regcache.
# Node raises its own soft limit to the hard one, so the hard limit is what counts: raise it (as root)
# when it is lower; otherwise the bench stops and names the limit.
want_files=$(( 4 * ${BENCH_LOAD_CONNECTIONS:-500} ))
if [ "$(ulimit -Hn)" != unlimited ] && [ "$(ulimit -Hn)" -lt "$want_files" ]; then
  echo "load bench: raising the open files limit from $(ulimit -Hn) to $want_files"
  ulimit -n "$want_files" || echo "load bench: could not raise the open files limit (not root?)" >&2
fi
node --import tsx bench/load-bench.ts || status=$?
node --import tsx bench/workers-bench.ts || status=$?
node --import tsx bench/auth-bench.ts || status=$?
node --import tsx bench/s3-bench.ts || status=$?
node --import tsx bench/start-bench.ts || status=$? # npm start to healthy, built, beside the previous scripts and the floor
exit "$status"
