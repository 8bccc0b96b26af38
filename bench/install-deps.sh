#!/usr/bin/env bash
# Installs the Debian packages only the benchmarks drive (on top of test/install-deps.sh): squid with
# ssl-bump and iproute2's ip/tc for the peer bench, when they are missing. As root it runs apt-get;
# otherwise it names what is missing and fails.
set -euo pipefail

# command -> Debian package (squid-openssl is the build with ssl-bump and security_file_certgen)
declare -A needs=(
  [squid]=squid-openssl
  [/usr/lib/squid/security_file_certgen]=squid-openssl
  [ip]=iproute2
  [tc]=iproute2
)

missing=()
for cmd in "${!needs[@]}"; do
  command -v "$cmd" >/dev/null 2>&1 || PATH="$PATH:/usr/sbin:/sbin" command -v "$cmd" >/dev/null 2>&1 || missing+=("${needs[$cmd]}")
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
