#!/usr/bin/env bash
# Idempotent setup of the local test environment:
#   - Prometheus from Debian (only if missing),
#   - Chromium from Debian (only if missing; the report's browser test renders in it),
#   - kube-apiserver / kube-controller-manager / kube-scheduler / etcd / kwok
#     built from the pinned Go modules in tests/env/go into a versioned cache
#     (skipped when already cached),
#   - the canary-demo workload (cargo).
# Environment knobs:
#   KUBECTL_CANARY_ENV_CACHE  cache root (default ~/.cache/kubectl-canary-env)
#   CANARY_TEST_KUBECONFIG    if set, an existing cluster is used: no control-plane build
#   CANARY_ENV_SKIP_DEMO=1    do not build canary-demo
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
. "$HERE/versions.sh"

log() { printf '[env] %s\n' "$*" >&2; }
T0=$SECONDS

# --- Debian packages (apt-get update once, only when something is missing) ---
export DEBIAN_FRONTEND=noninteractive
SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"
APT_UPDATED=0
apt_install() {
  [ "$APT_UPDATED" = 1 ] || { $SUDO apt-get update -qq >/dev/null; APT_UPDATED=1; }
  $SUDO apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

# --- Prometheus -------------------------------------------------------------
if ! command -v prometheus >/dev/null 2>&1; then
  log "installing prometheus (Debian package)…"
  # policy-rc.d keeps the package's own service from being started where that matters.
  apt_install prometheus
  # We run our own Prometheus; stop the packaged service if a service manager started it.
  if command -v systemctl >/dev/null 2>&1 && systemctl is-active --quiet prometheus 2>/dev/null; then
    $SUDO systemctl stop prometheus || true
  fi
  log "prometheus installed: $(prometheus --version 2>&1 | head -1)"
else
  log "prometheus present: $(prometheus --version 2>&1 | head -1)"
fi

# --- Chromium (headless, for tests/e2e_report.rs) ----------------------------
if ! command -v chromium >/dev/null 2>&1; then
  log "installing chromium (Debian package)…"
  apt_install chromium
  log "chromium installed: $(chromium --version 2>/dev/null | head -1)"
else
  log "chromium present: $(chromium --version 2>/dev/null | head -1)"
fi

# --- Go binaries ------------------------------------------------------------
command -v go >/dev/null || { log "ERROR: go toolchain not found on PATH"; exit 1; }
mkdir -p "$ENV_BIN"

# build NAME MODULE_DIR PACKAGE EST_MINUTES [LDFLAGS]
build() {
  local name=$1 dir=$2 pkg=$3 est=$4 ldflags=${5:-}
  if [ -x "$ENV_BIN/$name" ]; then
    log "$name: cached ($ENV_BIN/$name)"
    return
  fi
  log "building $name (cold build, ~$est min on 2 cores; progress below)…"
  local t tmp="$ENV_BIN/.$name.tmp.$$"
  t=$(date +%s)
  (
    cd "$HERE/go/$dir"
    # Print a heartbeat every 30 s so a long cold build visibly progresses.
    ( while sleep 30; do printf '[env]   … still building %s (%ds elapsed)\n' "$name" $(($(date +%s) - t)) >&2; done ) &
    hb=$!
    trap 'kill $hb 2>/dev/null || true' EXIT
    GOFLAGS="${GOFLAGS:-} -mod=readonly -trimpath -buildvcs=false" go build -ldflags "-s -w $ldflags" -o "$tmp" "$pkg"
  )
  mv -f "$tmp" "$ENV_BIN/$name"
  log "built $name in $(($(date +%s) - t))s"
}

if [ -n "${CANARY_TEST_KUBECONFIG:-}" ]; then
  log "CANARY_TEST_KUBECONFIG is set: using that cluster, not building the control plane"
else
  VPKG=k8s.io/component-base/version
  KMINOR=${K8S_VERSION#v1.}; KMINOR=${KMINOR%%.*}
  KLDF="-X $VPKG.gitVersion=$K8S_VERSION -X $VPKG.gitMajor=1 -X $VPKG.gitMinor=$KMINOR -X $VPKG.gitTreeState=clean -X $VPKG.buildDate=1970-01-01T00:00:00Z"
  KLDF="$KLDF -X k8s.io/client-go/pkg/version.gitVersion=$K8S_VERSION -X k8s.io/client-go/pkg/version.gitMajor=1 -X k8s.io/client-go/pkg/version.gitMinor=$KMINOR"
  for b in etcd kwok kube-apiserver kube-controller-manager kube-scheduler; do
    if [ ! -x "$ENV_BIN/$b" ]; then
      log "control-plane binaries not cached yet: one-time cold build, ~20 min on 2 cores"
      log "(downloads ~1.4 GB of Go modules, uses ~3.5 GB of Go build cache; result cached in $ENV_BIN)"
      break
    fi
  done
  build etcd etcd go.etcd.io/etcd/server/v3 2
  build kwok kwok sigs.k8s.io/kwok/cmd/kwok 5
  build kube-apiserver k8s k8s.io/kubernetes/cmd/kube-apiserver 9 "$KLDF"
  build kube-controller-manager k8s k8s.io/kubernetes/cmd/kube-controller-manager 3 "$KLDF"
  build kube-scheduler k8s k8s.io/kubernetes/cmd/kube-scheduler 1 "$KLDF"
fi

# --- canary-demo ------------------------------------------------------------
if [ "${CANARY_ENV_SKIP_DEMO:-0}" != 1 ]; then
  log "building canary-demo (cargo build -p canary-demo)…"
  t=$SECONDS
  (cd "$ROOT" && cargo build -p canary-demo)
  log "canary-demo ready in $((SECONDS - t))s"
fi

log "setup done in $((SECONDS - T0))s (binaries: $ENV_BIN)"
