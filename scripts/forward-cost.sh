#!/usr/bin/env bash
# What a forwarded push costs against a plain one, measured so that load on the machine does
# not move the figures: user-space instructions per push (valgrind's callgrind; (instructions
# for 1500 pushes - for 500) / 1000, so start-up and shutdown cancel out), and, without
# valgrind, context switches per push (`perf stat -e context-switches`, a software counter)
# over 3000 pushes. Pushes are plain text messages with fresh MsgIds on one keep-alive
# connection; the forwarded ones go to `forward_load endpoint 0` (benches/forward_load.rs).
# FORWARD_COST_WXMP=path measures another wxmp binary.
set -eu
shopt -s inherit_errexit
cd "$(dirname "$0")/.."
command -v valgrind >/dev/null || { apt-get install -y valgrind >/dev/null 2>&1 ||
    { apt-get update >/dev/null && apt-get install -y valgrind >/dev/null; }; }
cargo build --release --bin wxmp --example forward_load
target=$(cargo metadata --format-version 1 --no-deps | sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')
bin="${FORWARD_COST_WXMP:-${target:-target}/release/wxmp}"
fwd="${target:-target}/release/examples/forward_load"
work=$(mktemp -d)
ep_pid=""
trap '[ -n "$ep_pid" ] && kill "$ep_pid" 2>/dev/null; rm -rf "$work"' EXIT

"$fwd" endpoint 0 >"$work/ep" 2>&1 &
ep_pid=$!
url=""
for _ in $(seq 100); do
    url=$(sed -n 's/^listening on //p' "$work/ep")
    [ -n "$url" ] && break
    sleep 0.05
done
[ -n "$url" ] || { echo "forward-cost: the endpoint did not start" >&2; exit 1; }
printf '[default]\nreply.forward = "%s"\n' "$url" >"$work/forward.toml"

cat >"$work/drive.py" <<'PY'
import hashlib, http.client, sys, time
port, n = int(sys.argv[1]), int(sys.argv[2])
token = "costtoken"
conn = http.client.HTTPConnection("127.0.0.1", port)
for i in range(1, n + 1):
    ts, nonce = str(int(time.time())), str(i)
    sig = hashlib.sha1("".join(sorted([token, ts, nonce])).encode()).hexdigest()
    body = ("<xml><ToUserName><![CDATA[gh_7f083739789a]]></ToUserName>"
            "<FromUserName><![CDATA[oia2TjjewbmiOUlr6X-1crbLOvLw]]></FromUserName>"
            "<CreateTime>1700000000</CreateTime><MsgType><![CDATA[text]]></MsgType>"
            "<Content><![CDATA[hello 你好]]></Content><MsgId>%d</MsgId></xml>" % i).encode()
    conn.request("POST", "/weixin?signature=%s&timestamp=%s&nonce=%s" % (sig, ts, nonce), body)
    resp = conn.getresponse()
    out = resp.read()
    assert resp.status == 200 and "hello".encode() in out, (resp.status, out)
PY

# start PREFIX... ARGS: the server under PREFIX (a command or nothing); leaves PID and PORT.
start() {
    local prefix=$1
    shift
    # shellcheck disable=SC2086 # the prefix is words on purpose
    $prefix "$bin" serve --host 127.0.0.1 --port 0 --token costtoken --threads 2 "$@" \
        >"$work/out" 2>"$work/err" &
    PID=$!
    PORT=""
    for _ in $(seq 600); do
        PORT=$(sed -n 's|.*listening on http://[^:]*:\([0-9]*\).*|\1|p' "$work/out" | head -1)
        [ -n "$PORT" ] && return 0
        sleep 0.1
    done
    cat "$work/err" >&2
    exit 1
}

instructions() { # N ARGS...: callgrind's total for a server that answered N pushes
    local n=$1
    shift
    start "valgrind --tool=callgrind --callgrind-out-file=/dev/null" "$@"
    python3 "$work/drive.py" "$PORT" "$n"
    kill -TERM "$PID"
    wait "$PID" || true
    sed -n 's/.*Collected : \([0-9]*\).*/\1/p' "$work/err"
}

switches() { # ARGS...: context switches per push over 3000 pushes (after 200 to warm up)
    start "" "$@"
    python3 "$work/drive.py" "$PORT" 200
    perf stat -e context-switches -x, -o "$work/perf" -p "$PID" &
    local perf_pid=$!
    sleep 0.3
    python3 "$work/drive.py" "$PORT" 3000
    kill -INT "$perf_pid"
    wait "$perf_pid" || true
    kill -TERM "$PID"
    wait "$PID" || true
    awk -F, '/context-switches/ { printf "%.2f", $1 / 3000 }' "$work/perf"
}

for setting in "plain" "forwarded"; do
    args=(--quiet)
    [ "$setting" = forwarded ] && args+=(--rules "$work/forward.toml")
    a=$(instructions 500 "${args[@]}")
    b=$(instructions 1500 "${args[@]}")
    cs=""
    command -v perf >/dev/null && cs=", $(switches "${args[@]}") context switches per push"
    printf '%-10s %7d instructions per push%s\n' "$setting" $(((b - a) / 1000)) "$cs"
done
