# Shared helpers for tests/env/{up,down} (sourced).
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
. "$HERE/versions.sh"
ENV_DIR="${KUBECTL_CANARY_ENV_DIR:-/tmp/kubectl-canary-env}"
PID_DIR="$ENV_DIR/pids"
LOG_DIR="$ENV_DIR/logs"

log() { printf '[env] %s\n' "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

# free_port: print a TCP port that is free on 127.0.0.1 right now.
free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
}

# http_ok URL [CA] [CERT] [KEY]: exit 0 when GET URL answers 200.
http_ok() {
  python3 - "$@" <<'PY' 2>/dev/null
import ssl, sys, urllib.request
url = sys.argv[1]
ctx = None
if url.startswith("https"):
    ctx = ssl.create_default_context(cafile=sys.argv[2])
    ctx.load_cert_chain(sys.argv[3], sys.argv[4])
with urllib.request.urlopen(url, timeout=2, context=ctx) as r:
    sys.exit(0 if r.status == 200 else 1)
PY
}

# alive NAME: the recorded process group of NAME still exists.
alive() {
  local f="$PID_DIR/$1.pid"
  [ -f "$f" ] && kill -0 "$(cat "$f")" 2>/dev/null
}

# stop_group NAME: TERM then KILL the process group recorded for NAME.
stop_group() {
  local f="$PID_DIR/$1.pid" pid i
  [ -f "$f" ] || return 0
  pid=$(cat "$f")
  if kill -0 "$pid" 2>/dev/null; then
    kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
    for i in $(seq 1 50); do
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.1
    done
    kill -KILL -- "-$pid" 2>/dev/null || true
    kill -KILL "$pid" 2>/dev/null || true
  fi
  rm -f "$f"
}
