#!/bin/sh
# Makes a CA for a regcache fleet whose CA_DIR is read-only (a Kubernetes Secret): DIR/ca.crt and
# DIR/ca.key, as regcache makes its own (RSA 2048, 10 years, CA:TRUE pathlen:0, a unique name). Never
# overwrites. Already running one regcache whose CA clients trust? Copy its CA_DIR's two files instead.
#   deploy/make-ca.sh deploy/kubernetes/ca
set -eu
dir=${1:?usage: make-ca.sh DIR (creates DIR/ca.crt and DIR/ca.key)}
if [ -e "$dir/ca.crt" ] || [ -e "$dir/ca.key" ]; then
  echo "make-ca.sh: $dir already holds ca.crt or ca.key; not replacing a CA clients may trust" >&2
  exit 1
fi
umask 077
mkdir -p "$dir"
openssl req -x509 -newkey rsa:2048 -nodes -sha256 -days 3650 \
  -subj "/O=regcache/CN=regcache CA $(openssl rand -hex 4)" \
  -addext "basicConstraints=critical,CA:TRUE,pathlen:0" \
  -addext "keyUsage=critical,keyCertSign,cRLSign,digitalSignature" \
  -addext "subjectKeyIdentifier=hash" \
  -keyout "$dir/ca.key" -out "$dir/ca.crt" 2>/dev/null
chmod 644 "$dir/ca.crt"
echo "$dir/ca.crt: the CA clients must trust; $dir/ca.key: keep it secret (it signs for any host)"
