#!/usr/bin/env bash
# Installs the Debian packages the end-to-end tests drive (real registry, real clients) when they are
# missing; with --bench also those only the benchmarks use. As root it runs apt-get; otherwise it names
# what is missing and fails.
set -euo pipefail

# command -> Debian package
declare -A needs=(
  [docker-compose]=docker-compose # the compose test (Compose v1)
  [mmdebstrap]=mmdebstrap # the image test: a stand-in for the FROM image
  [docker-registry]=docker-registry
  [skopeo]=skopeo
  [dockerd]=docker.io
  [containerd]=containerd
  [ctr]=containerd
  [podman]=podman # the clients test: podman and buildah through both doors
  [buildah]=buildah
  [unshare]=util-linux # the clients test: a dockerd that sees a private /etc/docker (certs.d)
  [curl]=curl # an OpenSSL client that answers an unknown CA with a TLS alert, as dockerd does
  [setpriv]=util-linux # startup errors as the image's uid 1000
  # the S3 store's tests: a single-node Ceph (one mon, one OSD) and its RADOS Gateway (test/harness/s3-server.ts)
  [ceph-mon]=ceph-mon
  [ceph-osd]=ceph-osd
  [radosgw]=radosgw
  [radosgw-admin]=radosgw
  [ceph]=ceph-common
  [monmaptool]=ceph-base
  [haproxy]=haproxy # the S3 fleet test: a load balancer in front of two replicas; deploy/compose/haproxy.cfg checked
  [openssl]=openssl # deploy/make-ca.sh, as the deploy test runs it
  [promtool]=prometheus # deploy/prometheus: promtool check/test rules; a real Prometheus scraping regcache
  [prometheus]=prometheus
  [chromium]=chromium # the status page in a real browser (headless, driven by playwright-core)
  [script]=bsdutils # a pseudo-terminal for the log format's terminal default
)
what=tests
if [ "${1:-}" = --bench ]; then
  what=benchmarks
  needs+=(
    [wrk]=wrk # the load bench's HTTP load generator
    [squid]=squid-openssl # the peer bench's MITM cache: the build with ssl-bump and security_file_certgen
    [/usr/lib/squid/security_file_certgen]=squid-openssl
    [ip]=iproute2 # the peer bench's slow upstream: a network namespace and tc
    [tc]=iproute2
  )
fi

missing=()
for cmd in "${!needs[@]}"; do
  command -v "$cmd" >/dev/null 2>&1 || PATH="$PATH:/usr/sbin:/sbin" command -v "$cmd" >/dev/null 2>&1 || missing+=("${needs[$cmd]}")
done
[ ${#missing[@]} -eq 0 ] && exit 0
mapfile -t missing < <(printf '%s\n' "${missing[@]}" | sort -u)

if [ "$(id -u)" -ne 0 ]; then
  echo "The $what need these Debian packages: ${missing[*]}" >&2
  echo "Install them with: sudo apt-get install -y ${missing[*]}" >&2
  exit 1
fi

echo "Installing dependencies of the $what: ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
