#!/usr/bin/env bash
# THE test command: builds/starts the local test environment (Kubernetes control
# plane on kwok + Prometheus), runs the whole cargo test suite against it, and
# always stops the environment again (also on failure or Ctrl-C).
#
#   bash tests/run.sh                 # everything
#   bash tests/run.sh --test env_cluster   # extra args go to `cargo test`
#
# With CANARY_TEST_KUBECONFIG already set, that cluster is used instead of the
# local control plane (Prometheus and the demo workload still run locally).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
T0=$(date +%s)

bash tests/env/setup.sh

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

echo "[env] running: cargo test --workspace --all-targets $*" >&2
cargo test --workspace --all-targets "$@"
echo "[env] tests finished in $(( $(date +%s) - T0 ))s (including setup)" >&2
