#!/usr/bin/env bash
# Fetches the ONNX Runtime CPU shared library from the npm package
# onnxruntime-node@1.24.1, verifies its SHA-256 against the digest pinned in
# internal/runtime/onnx/libonnxruntime.sha256, and installs it as
# build/onnxruntime/libonnxruntime.so.1. Idempotent: a verified library is
# left alone.
set -euo pipefail
cd "$(dirname "$0")/.."

version=1.24.1
want=$(tr -d ' \n' < internal/runtime/onnx/libonnxruntime.sha256)
dest=build/onnxruntime/libonnxruntime.so.1

if [ -f "$dest" ] && [ "$(sha256sum "$dest" | cut -d' ' -f1)" = "$want" ]; then
  exit 0
fi

if ! command -v npm >/dev/null 2>&1; then
  if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "setup-onnxruntime: installing npm (Debian package npm)" >&2
    DEBIAN_FRONTEND=noninteractive apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends npm >/dev/null
  else
    echo "setup-onnxruntime: npm is required (Debian package npm)" >&2
    exit 1
  fi
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
echo "setup-onnxruntime: fetching onnxruntime-node@$version" >&2
(cd "$work" && npm install --ignore-scripts --no-audit --no-fund --silent \
  "onnxruntime-node@$version" >/dev/null)
src="$work/node_modules/onnxruntime-node/bin/napi-v6/linux/x64/libonnxruntime.so.1"
got=$(sha256sum "$src" | cut -d' ' -f1)
if [ "$got" != "$want" ]; then
  echo "setup-onnxruntime: digest mismatch: got $got, pinned $want" >&2
  exit 1
fi
mkdir -p "$(dirname "$dest")"
install -m 0644 "$src" "$dest.tmp"
mv "$dest.tmp" "$dest"
echo "setup-onnxruntime: installed $dest (sha256 $got)" >&2
