#!/usr/bin/env bash
# Installs the Debian packages the end-to-end tests drive (real registry, real clients) when they are
# missing. As root it runs apt-get; otherwise it names what is missing and fails.
set -euo pipefail

# command -> Debian package
declare -A needs=(
  [docker-registry]=docker-registry
  [skopeo]=skopeo
  [dockerd]=docker.io
  [containerd]=containerd
  [ctr]=containerd
)

missing=()
for cmd in "${!needs[@]}"; do
  command -v "$cmd" >/dev/null 2>&1 || PATH="$PATH:/usr/sbin:/sbin" command -v "$cmd" >/dev/null 2>&1 || missing+=("${needs[$cmd]}")
done
[ ${#missing[@]} -eq 0 ] && exit 0
mapfile -t missing < <(printf '%s\n' "${missing[@]}" | sort -u)

if [ "$(id -u)" -ne 0 ]; then
  echo "The tests need these Debian packages: ${missing[*]}" >&2
  echo "Install them with: sudo apt-get install -y ${missing[*]}" >&2
  exit 1
fi

echo "Installing test dependencies: ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
