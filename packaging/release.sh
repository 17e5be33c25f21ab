#!/usr/bin/env bash
# Release packaging for krew.
#
#   packaging/release.sh                 pack for this machine, then render (the local release)
#   packaging/release.sh pack [--target TRIPLE] [--bin FILE] [--dist DIR]
#       cargo build --release --locked (for TRIPLE, default: the host), then write
#       DIST/kubectl-canary-vVERSION-OS-ARCH.tar.gz (binary + LICENSE + completion helper
#       at the archive's top level) and its .sha256. --bin packs an already built
#       binary instead of building (used by tests/krew_install.rs).
#   packaging/release.sh render [--require-all] [--dist DIR]
#       DIST/canary.yaml from krew-manifest.yaml: @VERSION@ from Cargo.toml, and each
#       platform's sha256 computed from DIST's archive for it. A platform with no archive
#       in DIST is LEFT OUT of the rendered manifest (never a made-up checksum);
#       --require-all makes that an error instead (the CI release does all five).
#
# DIST defaults to ./dist (git-ignored). Needs bash, cargo, tar, gzip, awk and
# sha256sum or shasum.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

stage="" # pack's staging directory
trap '[ -z "$stage" ] || rm -rf "$stage"' EXIT

die() { echo "release.sh: $*" >&2; exit 1; }
log() { echo "release.sh: $*" >&2; }

sha256() {
  if command -v sha256sum >/dev/null 2>&1; then sha256sum "$1" | cut -d' ' -f1
  else shasum -a 256 "$1" | cut -d' ' -f1; fi
}

version() { # [package] version in Cargo.toml
  awk '/^\[package\]/ { p = 1; next } /^\[/ { p = 0 }
       p && /^version *=/ { gsub(/^version *= *"|".*$/, ""); print; exit }' Cargo.toml
}

# Target triple -> krew os_arch.
platform_of() {
  case "$1" in
    x86_64-unknown-linux-*) echo linux_amd64 ;;
    aarch64-unknown-linux-*) echo linux_arm64 ;;
    x86_64-apple-darwin) echo darwin_amd64 ;;
    aarch64-apple-darwin) echo darwin_arm64 ;;
    x86_64-pc-windows-*) echo windows_amd64 ;;
    *) die "no krew platform for target $1" ;;
  esac
}

archive_name() { # VERSION os_arch
  echo "kubectl-canary-v$1-${2/_/-}.tar.gz"
}

pack() {
  local target="" bin="" dist="$ROOT/dist"
  while [ $# -gt 0 ]; do
    case "$1" in
      --target) target="$2"; shift 2 ;;
      --bin) bin="$2"; shift 2 ;;
      --dist) dist="$2"; shift 2 ;;
      *) die "pack: unknown argument $1" ;;
    esac
  done
  [ -n "$target" ] || target="$(rustc -vV | sed -n 's/^host: //p')"
  local plat exe="" helper=kubectl_complete-canary
  plat="$(platform_of "$target")"
  case "$plat" in windows_*) exe=.exe; helper=kubectl_complete-canary.cmd ;; esac

  if [ -z "$bin" ]; then
    log "building kubectl-canary (release profile, $target)…"
    cargo build --release --locked --bin kubectl-canary --target "$target"
    bin="${CARGO_TARGET_DIR:-$ROOT/target}/$target/release/kubectl-canary$exe"
  fi
  [ -f "$bin" ] || die "binary not found: $bin"

  local v archive
  v="$(version)"
  [ -n "$v" ] || die "no [package] version in Cargo.toml"
  mkdir -p "$dist"
  stage="$(mktemp -d)"
  cp "$bin" "$stage/kubectl-canary$exe"
  cp LICENSE "$stage/LICENSE"
  cp "packaging/$helper" "$stage/$helper"
  chmod 755 "$stage/kubectl-canary$exe" "$stage/$helper"
  chmod 644 "$stage/LICENSE"
  archive="$dist/$(archive_name "$v" "$plat")"
  tar -czf "$archive" -C "$stage" "kubectl-canary$exe" LICENSE "$helper"
  echo "$(sha256 "$archive")  $(basename "$archive")" >"$archive.sha256"
  rm -rf "$stage"; stage=""
  log "packed $archive ($(wc -c <"$archive" | tr -d ' ') bytes; binary $(wc -c <"$bin" | tr -d ' ') bytes)"
}

render() {
  local require_all=0 dist="$ROOT/dist"
  while [ $# -gt 0 ]; do
    case "$1" in
      --require-all) require_all=1; shift ;;
      --dist) dist="$2"; shift 2 ;;
      *) die "render: unknown argument $1" ;;
    esac
  done
  local v plat archive shas="" kept=0 missing=""
  v="$(version)"
  for plat in $(grep -o '@SHA256_[a-z0-9_]*@' krew-manifest.yaml | sed 's/@SHA256_\(.*\)@/\1/'); do
    archive="$dist/$(archive_name "$v" "$plat")"
    if [ -f "$archive" ]; then
      shas="$shas $plat=$(sha256 "$archive")"
      kept=$((kept + 1))
    else
      missing="$missing $plat"
    fi
  done
  if [ -n "$missing" ]; then
    [ "$require_all" = 0 ] || die "no archive in $dist for:$missing"
    log "no archive for:$missing — left out of the manifest"
  fi
  [ "$kept" -gt 0 ] || die "no archive for version v$v in $dist"

  # Copy the template; in spec.platforms, drop each `- selector:` item whose archive is
  # missing and fill the sha256 of the others.
  awk -v version="$v" -v shas="$shas" '
    BEGIN { n = split(shas, kv, " "); for (i = 1; i <= n; i++) { split(kv[i], p, "="); sha[p[1]] = p[2] } }
    function flush() { if (keep) printf "%s", block; block = ""; keep = 0 }
    NR == 1 { print "# Rendered by packaging/release.sh from krew-manifest.yaml." }
    !body && /^#/ { next }
    {
      body = 1
      gsub(/@VERSION@/, version)
      if (inlist && $0 ~ /^  - /) { flush(); item = 1; keep = 1 }
      else if (inlist && $0 !~ /^    /) { flush(); item = 0; inlist = 0 }
      if (item) {
        if (match($0, /@SHA256_[a-z0-9_]+@/)) {
          key = substr($0, RSTART + 8, RLENGTH - 9)
          if (key in sha) sub(/@SHA256_[a-z0-9_]+@/, sha[key]); else keep = 0
        }
        block = block $0 "\n"
        next
      }
      print
      if ($0 ~ /^  platforms:/) inlist = 1
    }
    END { flush() }
  ' krew-manifest.yaml >"$dist/canary.yaml"
  if grep -n '@[A-Z0-9_a-z]*@' "$dist/canary.yaml" >&2; then die "placeholders left in $dist/canary.yaml"; fi
  log "rendered $dist/canary.yaml (v$v, $kept platform(s))"
}

case "${1:-all}" in
  pack) shift; pack "$@" ;;
  render) shift; render "$@" ;;
  all) [ $# -le 1 ] || die "no arguments without a command"; pack; render ;;
  -h|--help|help) sed -n '2,18p' "$0" ;;
  *) die "unknown command $1 (pack, render or none)" ;;
esac
