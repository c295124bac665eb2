#!/usr/bin/env bash
# Installs the Debian packages the build and tests need, if any is missing:
#   npm               fetches ONNX Runtime (onnxruntime-node) in scripts/setup-onnxruntime.sh
#   curl              the README's REST client, exercised by the tests
#   libonnx-testdata  the ONNX backend test data the conformance tests run
#   age               the reference age tool, for interoperability tests
#   softhsm2          a real PKCS#11 token (SoftHSM2) for the HSM key-custody tests
#   redis-server      the Redis the rate-limit tests and bench/ratelimit start on loopback
#   redis-tools       redis-cli and redis-benchmark (bench/ratelimit's baseline)
set -euo pipefail
missing=()
command -v npm >/dev/null 2>&1 || missing+=(npm)
command -v curl >/dev/null 2>&1 || missing+=(curl)
command -v age >/dev/null 2>&1 || missing+=(age)
command -v softhsm2-util >/dev/null 2>&1 || missing+=(softhsm2)
command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
command -v redis-benchmark >/dev/null 2>&1 || missing+=(redis-tools)
[ -d /usr/share/libonnx-testdata/data/node ] || missing+=(libonnx-testdata)
if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
  echo "install-deps: missing Debian packages: ${missing[*]} (run as root or install them)" >&2
  exit 1
fi
echo "install-deps: installing ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
