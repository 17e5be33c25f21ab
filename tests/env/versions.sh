# Pinned versions of the test environment's binaries (sourced by setup.sh/up).
K8S_VERSION=v1.36.3
ETCD_VERSION=v3.6.16
KWOK_VERSION=v0.8.0
ENV_CACHE="${KUBECTL_CANARY_ENV_CACHE:-$HOME/.cache/kubectl-canary-env}"
ENV_BIN="$ENV_CACHE/k8s-$K8S_VERSION-etcd-$ETCD_VERSION-kwok-$KWOK_VERSION/bin"
