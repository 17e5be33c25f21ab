#!/usr/bin/env bash
# Benchmarks of the runner and of `status` over many rollouts, against the test environment
# (a documented command, not a timed test). Needs the environment up, kubectl, jq, python3:
#
#   export KUBECTL_CANARY_ENV_DIR=/tmp/kc-env-bench
#   bash tests/env/setup.sh && bash tests/env/up && . $KUBECTL_CANARY_ENV_DIR/env.sh
#   cargo build --profile bench --bin kubectl-canary      # optimized, without the LTO of --release
#   bash benches/runners.sh status [N=1000]
#       N rollout states over 10 namespaces (copies of one real rollout's state ConfigMap),
#       then `status -A` (table and -o json) and `kubectl get configmaps -A -l …` timed in
#       the same run, 5 rounds each, median.
#   bash benches/runners.sh run-all [N=200] [INTERVAL=10s] [SECONDS=600]
#       N real rollouts (stable at 0 replicas, one canary pod each, a policy that holds),
#       one `run --all` driving them for SECONDS: peak RSS, CPU (% of one core), and how late
#       each evaluation came after its due time (p50/p99/max), from the rollouts' own
#       evaluation timestamps. The policy reads no metrics (they are fetched all the same,
#       but for the latency samples); READS_LATENCY=1 makes it call ctx.latency_test() like
#       the shipped policies, so the runner fetches the samples (two range queries) too.
#
# BIN=path/to/kubectl-canary overrides the binary (default target/release/kubectl-canary,
# where the bench profile puts it). KEEP=1 keeps the namespaces.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
: "${CANARY_TEST_KUBECONFIG:?source \$KUBECTL_CANARY_ENV_DIR/env.sh first}"
BIN="${BIN:-$ROOT/target/release/kubectl-canary}"
[ -x "$BIN" ] || { echo "no $BIN: cargo build --profile bench --bin kubectl-canary" >&2; exit 1; }
K=(kubectl --kubeconfig "$CANARY_TEST_KUBECONFIG")
KC=("$BIN" --kubeconfig "$CANARY_TEST_KUBECONFIG")
export KUBECTL_CANARY_ACTOR=bench
WORK="$(mktemp -d)"
cleanup_ns=()
cleanup() {
  rm -rf "$WORK"
  if [ "${KEEP:-0}" != 1 ] && [ ${#cleanup_ns[@]} -gt 0 ]; then
    "${K[@]}" delete namespace "${cleanup_ns[@]}" --wait=false --ignore-not-found >/dev/null 2>&1 || true
  fi
}
trap cleanup EXIT

holding_policy() { # $1 interval; READS_LATENCY=1: the policy runs ctx.latency_test() first
  local reads=""
  [ "${READS_LATENCY:-0}" = 1 ] && reads='let l = ctx.latency_test();'
  cat > "$WORK/holding.rhai" <<EOF
fn schedule() {
    #{ steps: [10, 100], min_step_time: "24h", interval: "$1", min_requests: 0 }
}
fn decide(ctx) { $reads hold("watching") }
EOF
}

stable_objects() { # ns svc replicas -> the user's Deployment, Service, VirtualService
  cat <<EOF
{"apiVersion":"apps/v1","kind":"Deployment","metadata":{"name":"$2","namespace":"$1","labels":{"app":"$2"}},
 "spec":{"replicas":$3,"selector":{"matchLabels":{"app":"$2"}},
  "template":{"metadata":{"labels":{"app":"$2","version":"v1"}},
   "spec":{"containers":[{"name":"app","image":"kubectl-canary/demo:1.0"}]}}}}
{"apiVersion":"v1","kind":"Service","metadata":{"name":"$2","namespace":"$1"},
 "spec":{"selector":{"app":"$2"},"ports":[{"name":"http","port":80,"targetPort":8080}]}}
{"apiVersion":"networking.istio.io/v1","kind":"VirtualService","metadata":{"name":"$2","namespace":"$1"},
 "spec":{"hosts":["$2"],"http":[{"name":"primary","route":[{"destination":{"host":"$2"}}]}]}}
EOF
}

median() { sort -n | awk '{ a[NR] = $1 } END { print a[int((NR + 1) / 2)] }'; }

timed() { # command... -> seconds
  local t0 t1
  t0=$(date +%s.%N)
  "$@" >/dev/null
  t1=$(date +%s.%N)
  echo "$t1 - $t0" | bc
}

bench_status() {
  local n="${1:-1000}" src="bench-status-src-$$"
  holding_policy 30s
  cleanup_ns+=("$src")
  "${K[@]}" create namespace "$src" >/dev/null
  stable_objects "$src" web 1 | "${K[@]}" apply -f - >/dev/null
  "${KC[@]}" -n "$src" start web --image app=kubectl-canary/demo:2.0 --provider istio \
    --policy "$WORK/holding.rhai" --timeout 120s >/dev/null
  "${KC[@]}" -n "$src" step web >/dev/null || true
  "${K[@]}" -n "$src" get configmap web-canary-rollout -o json > "$WORK/state.json"
  echo "state ConfigMap: $(jq -r '.data["state.json"] | length' "$WORK/state.json") bytes" >&2
  for b in $(seq 0 9); do
    local ns="bench-status-$b-$$"
    cleanup_ns+=("$ns")
    "${K[@]}" create namespace "$ns" >/dev/null
    seq "$b" 10 $((n - 1)) | jq -R . | jq -s --arg ns "$ns" --slurpfile cm "$WORK/state.json" '
      {apiVersion: "v1", kind: "List", items: [ .[] as $i | ("svc-" + $i) as $svc |
        {apiVersion: "v1", kind: "ConfigMap",
         metadata: {name: ($svc + "-canary-rollout"), namespace: $ns,
                    labels: ($cm[0].metadata.labels + {"kubectl-canary.io/service": $svc})},
         data: {"state.json": ($cm[0].data["state.json"] | fromjson
                  | .current.namespace = $ns | .current.service = $svc | tojson)}} ]}' \
      | "${K[@]}" create -f - >/dev/null
  done
  local total
  total=$("${KC[@]}" status -A -o json | jq length)
  echo "rollouts listed by status -A: $total" >&2
  local a=() b=() c=() d=()
  for _ in 1 2 3 4 5; do
    a+=("$(timed "${KC[@]}" status -A)")
    b+=("$(timed "${KC[@]}" status -A -o json)")
    c+=("$(timed "${K[@]}" get configmaps -A -l app.kubernetes.io/managed-by=kubectl-canary -o json)")
  done
  for _ in 1 2; do d+=("$(timed "${KC[@]}" status -A --detail)"); done
  printf 'status -A (table)           median %ss  runs %s\n' "$(printf '%s\n' "${a[@]}" | median)" "${a[*]}"
  printf 'status -A -o json           median %ss  runs %s\n' "$(printf '%s\n' "${b[@]}" | median)" "${b[*]}"
  printf 'kubectl get configmaps -A   median %ss  runs %s\n' "$(printf '%s\n' "${c[@]}" | median)" "${c[*]}"
  printf 'status -A --detail          median %ss  runs %s\n' "$(printf '%s\n' "${d[@]}" | median)" "${d[*]}"
}

bench_run_all() {
  local n="${1:-200}" interval="${2:-10s}" secs="${3:-600}" ns="bench-run-$$"
  holding_policy "$interval"
  cleanup_ns+=("$ns")
  "${K[@]}" create namespace "$ns" >/dev/null
  for i in $(seq 0 $((n - 1))); do stable_objects "$ns" "svc-$i" 0; done | "${K[@]}" apply -f - >/dev/null
  echo "starting $n rollouts…" >&2
  seq 0 $((n - 1)) | xargs -P 8 -I{} "${KC[@]}" -n "$ns" start "svc-{}" \
    --image app=kubectl-canary/demo:2.0 --provider istio --policy "$WORK/holding.rhai" \
    --replicas 1 --timeout 300s >/dev/null
  echo "driving them for ${secs}s with one run --all (interval $interval)…" >&2
  "${KC[@]}" -n "$ns" run --all --prometheus-url "$CANARY_TEST_PROMETHEUS" > "${RUNLOG:-$WORK/run.log}" 2>&1 &
  local pid=$! hz rss=0 t0 c0 t1 c1
  hz=$(getconf CLK_TCK)
  sleep 30 # every rollout taken and evaluated once; measure the steady state from here
  t0=$(date +%s.%N); c0=$(awk '{ print $14 + $15 }' "/proc/$pid/stat")
  local end=$(( $(date +%s) + secs - 30 ))
  while [ "$(date +%s)" -lt "$end" ]; do
    rss=$(awk -v m="$rss" '/^VmRSS/ { print ($2 > m ? $2 : m) }' "/proc/$pid/status")
    sleep 5
  done
  t1=$(date +%s.%N); c1=$(awk '{ print $14 + $15 }' "/proc/$pid/stat")
  local peak; peak=$(awk '/^VmHWM/ { print $2 }' "/proc/$pid/status")
  kill -TERM "$pid"; wait "$pid" || true
  echo "peak RSS $((peak / 1024)) MiB (sampled max VmRSS $((rss / 1024)) MiB)"
  echo "CPU $(echo "scale=1; 100 * ($c1 - $c0) / $hz / ($t1 - $t0)" | bc)% of one core over $(echo "$t1 - $t0" | bc | cut -d. -f1)s"
  "${K[@]}" -n "$ns" get configmaps -l app.kubernetes.io/managed-by=kubectl-canary -o json \
    | python3 -c '
import json, sys, datetime
interval = float(sys.argv[1].rstrip("s")); skip = 30.0
docs = json.load(sys.stdin)["items"]
late, n = [], 0
def t(s): return datetime.datetime.fromisoformat(s.replace("Z", "+00:00")).timestamp()
for cm in docs:
    r = json.loads(cm["data"]["state.json"])["current"]["rollout"]
    ts = sorted(t(e["at"]) for e in r["evaluations"])
    n += 1
    first = ts[0] if ts else 0
    late += [b - a - interval for a, b in zip(ts, ts[1:]) if a - first >= skip]
late.sort()
q = lambda p: late[min(len(late) - 1, int(p * len(late)))] if late else float("nan")
print(f"{n} rollouts, {len(late)} evaluation gaps: lateness p50 {q(0.5):.3f}s p99 {q(0.99):.3f}s max {late[-1] if late else 0:.3f}s")
' "$interval"
  local log="${RUNLOG:-$WORK/run.log}"
  echo "run --all log lines: $(wc -l < "$log") (errors: $(grep -c ' error: ' "$log" || true))"
}

case "${1:-}" in
  status) shift; bench_status "$@" ;;
  run-all) shift; bench_run_all "$@" ;;
  *) sed -n '2,19p' "$0"; exit 2 ;;
esac
