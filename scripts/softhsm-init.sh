#!/usr/bin/env bash
# Creates a SoftHSM2 token for Aegis's PKCS#11 key custody, touching nothing
# outside DIR: it writes DIR/softhsm2.conf (tokens kept in DIR/tokens) and
# initialises a token in it, unless one with that label is already there.
#
#   SOFTHSM_SO_PIN=... SOFTHSM_USER_PIN=... scripts/softhsm-init.sh DIR
#
#   SOFTHSM_TOKEN_LABEL  token label (default: aegis)
#   SOFTHSM_SO_PIN       security officer PIN (4-255 characters)
#   SOFTHSM_USER_PIN     user PIN, the one Aegis logs in with (keys.pkcs11.pin_env)
#
# Prints `export SOFTHSM2_CONF=DIR/softhsm2.conf`, which every SoftHSM2 user
# (softhsm2-util, aegis, the module itself) needs to find the token: eval it.
# For development and tests: softhsm2-util takes the PINs as arguments, so
# they are visible to other local users while it runs. Needs the Debian
# package softhsm2.
set -euo pipefail

if [ $# -ne 1 ] || [ -z "$1" ]; then
  echo "usage: SOFTHSM_SO_PIN=... SOFTHSM_USER_PIN=... $0 DIR" >&2
  exit 2
fi
label=${SOFTHSM_TOKEN_LABEL:-aegis}
: "${SOFTHSM_SO_PIN:?softhsm-init: set SOFTHSM_SO_PIN}"
: "${SOFTHSM_USER_PIN:?softhsm-init: set SOFTHSM_USER_PIN}"
if [ ${#label} -gt 32 ]; then
  echo "softhsm-init: token label '$label' is longer than 32 characters" >&2
  exit 2
fi
if ! command -v softhsm2-util >/dev/null 2>&1; then
  echo "softhsm-init: softhsm2-util not found: install the Debian package softhsm2 (scripts/install-deps.sh)" >&2
  exit 1
fi

umask 077
mkdir -p "$1/tokens"
dir=$(cd "$1" && pwd -P)
conf=$dir/softhsm2.conf
cat >"$conf.tmp" <<EOF
# SoftHSM2 configuration written by scripts/softhsm-init.sh
directories.tokendir = $dir/tokens
objectstore.backend = file
log.level = ERROR
slots.removable = false
EOF
mv "$conf.tmp" "$conf"
export SOFTHSM2_CONF=$conf

# softhsm2-util pads labels to 32 characters in --show-slots.
if softhsm2-util --show-slots 2>/dev/null |
  awk -v l="$label" '$1 == "Label:" { sub(/^[ \t]*Label:[ \t]*/, ""); sub(/[ \t]+$/, ""); if ($0 == l) found = 1 } END { exit !found }'; then
  echo "softhsm-init: token '$label' already exists in $dir/tokens" >&2
else
  softhsm2-util --init-token --free --label "$label" \
    --so-pin "$SOFTHSM_SO_PIN" --pin "$SOFTHSM_USER_PIN" >/dev/null
  echo "softhsm-init: created token '$label' in $dir/tokens" >&2
fi
printf 'export SOFTHSM2_CONF=%q\n' "$conf"
