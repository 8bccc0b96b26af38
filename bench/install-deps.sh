#!/usr/bin/env bash
# Installs the Debian packages only the benchmarks use (on top of test/install-deps.sh) when they are
# missing. As root it runs apt-get; otherwise it names what is missing and fails.
set -euo pipefail

# command -> Debian package
declare -A needs=(
  [wrk]=wrk # the load bench's HTTP load generator (mirror port, registry baselines)
)

missing=()
for cmd in "${!needs[@]}"; do
  command -v "$cmd" >/dev/null 2>&1 || missing+=("${needs[$cmd]}")
done
[ ${#missing[@]} -eq 0 ] && exit 0
mapfile -t missing < <(printf '%s\n' "${missing[@]}" | sort -u)

if [ "$(id -u)" -ne 0 ]; then
  echo "The benchmarks need these Debian packages: ${missing[*]}" >&2
  echo "Install them with: sudo apt-get install -y ${missing[*]}" >&2
  exit 1
fi

echo "Installing benchmark dependencies: ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
