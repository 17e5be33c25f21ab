#!/usr/bin/env bash
# Builds krew (as kubectl-krew) and krew's validate-krew-manifest from the pinned Go
# module in this folder, once, into a versioned cache outside the repository, and
# prints that directory. Used by tests/krew_install.rs; usable by hand:
#   PATH="$(bash tests/krew/build.sh):$PATH" kubectl krew version
# KUBECTL_CANARY_ENV_CACHE overrides the cache root (default ~/.cache/kubectl-canary-env).
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
KREW_VERSION="$(awk '$1 == "sigs.k8s.io/krew" { print $2 }' "$HERE/go.mod")"
[ -n "$KREW_VERSION" ] || { echo "krew/build.sh: no sigs.k8s.io/krew in $HERE/go.mod" >&2; exit 1; }
OUT="${KUBECTL_CANARY_ENV_CACHE:-$HOME/.cache/kubectl-canary-env}/krew-$KREW_VERSION"

if [ -x "$OUT/kubectl-krew" ] && [ -x "$OUT/validate-krew-manifest" ]; then
  echo "$OUT"
  exit 0
fi
command -v go >/dev/null 2>&1 || { echo "krew/build.sh: ERROR: go is not on PATH (needed to build krew $KREW_VERSION)" >&2; exit 1; }
echo "krew/build.sh: building krew $KREW_VERSION into $OUT (cold: ~1-2 min on 2 cores)…" >&2
t0=$(date +%s)
mkdir -p "$OUT"
tmp="$(mktemp -d "$OUT/.build.XXXXXX")"
trap 'rm -rf "$tmp"' EXIT
(
  cd "$HERE"
  GOFLAGS="${GOFLAGS:-} -mod=readonly -trimpath" go build \
    -ldflags "-s -w -X sigs.k8s.io/krew/internal/version.gitTag=$KREW_VERSION" \
    -o "$tmp/" sigs.k8s.io/krew/cmd/krew sigs.k8s.io/krew/cmd/validate-krew-manifest
)
mv "$tmp/krew" "$tmp/kubectl-krew"
# rename(2) per file: a concurrent run sees either no binary or a whole one.
mv -f "$tmp/validate-krew-manifest" "$OUT/validate-krew-manifest"
mv -f "$tmp/kubectl-krew" "$OUT/kubectl-krew"
echo "krew/build.sh: built krew $KREW_VERSION in $(($(date +%s) - t0))s" >&2
echo "$OUT"
