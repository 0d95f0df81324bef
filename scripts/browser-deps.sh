#!/usr/bin/env bash
# Installs what the browser tests (pytest -m browser) need, idempotently and quietly:
#   - Debian's chromium (/usr/bin/chromium), only if it is missing;
#   - NLM LHC-Forms (npm package lforms, pinned) unpacked into .cache/lforms/ (git-ignored),
#     checked against a pinned sha512 and a list of the files the test page loads.
# The Playwright driver is a Python package (pyproject.toml, extra "test"); never run
# `playwright install`, which downloads browsers from a CDN.
set -euo pipefail

LFORMS_VERSION="40.1.3"
# sha512 of lforms-40.1.3.tgz as published on the npm registry (dist.integrity).
LFORMS_INTEGRITY="sha512-WLruTm+BcVnafC0rSAQ3/cNqhxvclBUxyBG68aub/uha2NaK9H8ZZcEXTTuORuGzzCt0wa7fvhuieZtcDIdPzQ=="
CHROMIUM="/usr/bin/chromium"

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DEST="$ROOT/.cache/lforms"
STAMP="$DEST/.complete-$LFORMS_VERSION"
# Files the test page loads (tests/browser/), relative to the package root.
REQUIRED=(
  package/package.json
  package/dist/lforms/webcomponent/styles.css
  package/dist/lforms/webcomponent/assets/lib/zone.min.js
  package/dist/lforms/webcomponent/runtime.js
  package/dist/lforms/webcomponent/polyfills.js
  package/dist/lforms/webcomponent/main.js
  package/dist/lforms/fhir/R4/lformsFHIR.min.js
)

die() { echo "browser-deps: error: $*" >&2; exit 1; }
log() { echo "browser-deps: $*"; }

APT_UPDATED=""
apt_install() {  # apt_install WHAT PACKAGE...: install Debian packages (sudo only if not root)
  local what="$1"; shift
  command -v apt-get >/dev/null 2>&1 || die "$what is missing and apt-get is not available; install $what by hand"
  local sudo=""
  if [ "$(id -u)" -ne 0 ]; then
    command -v sudo >/dev/null 2>&1 || die "$what is missing; run as root or install sudo"
    sudo="sudo"
  fi
  local aptlog
  aptlog="$(mktemp)"
  if [ -z "$APT_UPDATED" ]; then
    $sudo apt-get update -qq >"$aptlog" 2>&1 || die "apt-get update failed: $(tail -n 5 "$aptlog")"
    APT_UPDATED=1
  fi
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "$@" >"$aptlog" 2>&1 \
    || die "apt-get install $* failed: $(tail -n 5 "$aptlog")"
  rm -f "$aptlog"
}

# --- Chromium (Debian package) -------------------------------------------------------------
if [ ! -x "$CHROMIUM" ]; then
  log "installing Debian chromium (about 290 MB)..."
  apt_install Chromium chromium
  [ -x "$CHROMIUM" ] || die "chromium was installed but $CHROMIUM does not exist"
fi
"$CHROMIUM" --version >/dev/null 2>&1 || die "$CHROMIUM does not run ($CHROMIUM --version failed)"

# --- LHC-Forms (npm tarball) ---------------------------------------------------------------
complete() {
  local f
  for f in "${REQUIRED[@]}"; do
    [ -s "$DEST/$f" ] || return 1
  done
  grep -q "\"version\": \"$LFORMS_VERSION\"" "$DEST/package/package.json" || return 1
}

if [ -f "$STAMP" ] && complete; then
  log "ok: $("$CHROMIUM" --version 2>/dev/null | head -n1), lforms $LFORMS_VERSION in ${DEST#"$ROOT"/}"
  exit 0
fi

if ! command -v npm >/dev/null 2>&1; then
  log "installing Debian npm (needed once to fetch lforms $LFORMS_VERSION)..."
  apt_install npm npm
  command -v npm >/dev/null 2>&1 || die "npm was installed but is not on PATH"
fi
command -v sha512sum >/dev/null 2>&1 || die "sha512sum is missing (coreutils)"

TMP="$(mktemp -d)"
trap 'rm -rf "$TMP"' EXIT
log "fetching lforms $LFORMS_VERSION from npm..."
# npm pack downloads the published tarball only (no dependency resolution, no install scripts).
(cd "$TMP" && npm pack --silent "lforms@$LFORMS_VERSION" >"$TMP/pack.out" 2>"$TMP/pack.err") \
  || die "npm pack lforms@$LFORMS_VERSION failed: $(grep -v 'Unknown user config' "$TMP/pack.err" | tail -n 3)"
TGZ="$TMP/lforms-$LFORMS_VERSION.tgz"
[ -s "$TGZ" ] || die "npm pack did not produce $(basename "$TGZ")"

EXPECTED_HEX="$(printf '%s' "${LFORMS_INTEGRITY#sha512-}" | base64 -d | od -An -v -tx1 | tr -d ' \n')"
ACTUAL_HEX="$(sha512sum "$TGZ" | cut -d' ' -f1)"
[ "$EXPECTED_HEX" = "$ACTUAL_HEX" ] || die "lforms-$LFORMS_VERSION.tgz has the wrong sha512 (download corrupt or tampered)"

rm -rf "$DEST"
mkdir -p "$DEST"
tar -xzf "$TGZ" -C "$DEST" || die "could not untar lforms-$LFORMS_VERSION.tgz into $DEST"
complete || die "lforms $LFORMS_VERSION in $DEST is incomplete (a file the test page loads is missing)"
touch "$STAMP"
log "ok: $("$CHROMIUM" --version 2>/dev/null | head -n1), lforms $LFORMS_VERSION in ${DEST#"$ROOT"/}"
