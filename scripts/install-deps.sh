#!/usr/bin/env bash
# Installs the Debian packages the build and tests need, if any is missing.
# npm fetches ONNX Runtime; the rest are test and tooling dependencies.
set -euo pipefail
# command -> Debian package that provides it
declare -A need=([npm]=npm)
missing=()
for cmd in "${!need[@]}"; do
  command -v "$cmd" >/dev/null 2>&1 || missing+=("${need[$cmd]}")
done
if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
  echo "install-deps: missing Debian packages: ${missing[*]} (run as root or install them)" >&2
  exit 1
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
