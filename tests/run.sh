#!/usr/bin/env bash
# THE test command: builds/starts the local test environment (Kubernetes control
# plane on kwok + Prometheus), runs the whole cargo test suite against it, and
# always stops the environment again (also on failure or Ctrl-C).
#
#   bash tests/run.sh                 # everything
#   bash tests/run.sh --test env_cluster   # extra args go to `cargo test`;
#                                          # selecting targets drops --all-targets
#
# With CANARY_TEST_KUBECONFIG already set, that cluster is used instead of the
# local control plane (Prometheus and the demo workload still run locally).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
T0=$(date +%s)

# The book (docs/) must build: mdbook is installed once (cargo, pinned) when absent.
MDBOOK="$HOME/.cache/kubectl-canary-tools/bin/mdbook"
if [ ! -x "$MDBOOK" ]; then
  echo "[docs] installing mdbook (once, ~2 min)" >&2
  cargo install mdbook --locked --version 0.4.52 --no-default-features --features search \
    --root "$HOME/.cache/kubectl-canary-tools"
fi
echo "[docs] $MDBOOK build docs" >&2
"$MDBOOK" build docs

# canary-demo is built below together with the tests (same feature set, so
# dependencies are compiled once).
CANARY_ENV_SKIP_DEMO=1 bash tests/env/setup.sh

# --all-targets unless the caller selects targets (e.g. --test env_cluster).
SELECT=(--all-targets)
for a in "$@"; do
  case "$a" in
    --) break ;;
    --lib|--bin|--bin=*|--bins|--test|--test=*|--tests|--bench|--bench=*|--benches|--example|--example=*|--examples|--doc|--all-targets)
      SELECT=() ;;
  esac
done
# Compile everything before starting the environment (canary-demo's binary is
# needed by the tests; with --all-targets it is part of this build).
echo "[env] compiling: cargo build --workspace ${SELECT[*]:---bins}" >&2
if [ ${#SELECT[@]} -gt 0 ]; then
  cargo build --workspace "${SELECT[@]}"
else
  cargo build --workspace --bins
fi

cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  tests/env/down || true
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

tests/env/up
ENV_DIR="${KUBECTL_CANARY_ENV_DIR:-/tmp/kubectl-canary-env}"
# shellcheck disable=SC1091
. "$ENV_DIR/env.sh"

# The e2e tests each start demo processes and drive real traffic; on a 2-core machine more
# than 4 at once starve the control plane (a canary pod once missed a 60 s readiness wait).
export RUST_TEST_THREADS="${RUST_TEST_THREADS:-4}"
echo "[env] running: cargo test --workspace ${SELECT[*]} $* (RUST_TEST_THREADS=$RUST_TEST_THREADS)" >&2
cargo test --workspace "${SELECT[@]}" "$@"
echo "[env] tests finished in $(( $(date +%s) - T0 ))s (including setup)" >&2
