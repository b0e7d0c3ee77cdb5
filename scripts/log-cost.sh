#!/usr/bin/env bash
# What seeing the server costs: user-space instructions per push (valgrind's callgrind, so load on
# the machine does not move the figure) with --quiet, the text access log, the JSON log, and the
# live view on. Each figure is (instructions for 1500 pushes - for 500) / 1000, so start-up and
# shutdown cancel out; pushes are plain text messages with fresh MsgIds on one keep-alive
# connection. The write(2) of each log line is kernel time and not counted.
set -eu
cd "$(dirname "$0")/.."
command -v valgrind >/dev/null || { apt-get install -y valgrind >/dev/null 2>&1 ||
    { apt-get update >/dev/null && apt-get install -y valgrind >/dev/null; }; }
cargo build --release --bin wxmp
target=$(cargo metadata --format-version 1 --no-deps | sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')
bin="${target:-target}/release/wxmp"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

cat >"$work/drive.py" <<'PY'
import hashlib, http.client, sys, time
port, n = int(sys.argv[1]), int(sys.argv[2])
token = "costtoken"
conn = http.client.HTTPConnection("127.0.0.1", port)
for i in range(1, n + 1):
    # Signed now with a nonce of its own: the server refuses old timestamps and reused queries.
    ts, nonce = str(int(time.time())), str(i)
    sig = hashlib.sha1("".join(sorted([token, ts, nonce])).encode()).hexdigest()
    body = ("<xml><ToUserName><![CDATA[gh_7f083739789a]]></ToUserName>"
            "<FromUserName><![CDATA[oia2TjjewbmiOUlr6X-1crbLOvLw]]></FromUserName>"
            "<CreateTime>1700000000</CreateTime><MsgType><![CDATA[text]]></MsgType>"
            "<Content><![CDATA[hello 你好]]></Content><MsgId>%d</MsgId></xml>" % i).encode()
    conn.request("POST", "/weixin?signature=%s&timestamp=%s&nonce=%s" % (sig, ts, nonce), body)
    resp = conn.getresponse()
    resp.read()
    assert resp.status == 200, resp.status
PY

# instructions N ARGS...: callgrind's total for a server that answered N pushes.
instructions() {
    local n=$1 port="" pid
    shift
    valgrind --tool=callgrind --callgrind-out-file=/dev/null "$bin" serve --host 127.0.0.1 \
        --port 0 --token costtoken --threads 2 "$@" >"$work/out" 2>"$work/err" &
    pid=$!
    for _ in $(seq 600); do
        port=$(sed -n 's|^{"listening":{"http":"[^"]*:\([0-9]*\)".*|\1|p' "$work/out")
        [ -n "$port" ] && break
        sleep 0.1
    done
    [ -n "$port" ] || { cat "$work/err" >&2; exit 1; }
    python3 "$work/drive.py" "$port" "$n"
    kill -TERM "$pid"
    wait "$pid" || true
    sed -n 's/.*Collected : \([0-9]*\).*/\1/p' "$work/err"
}

for setting in "--quiet" "" "--log-format json" "--metrics-addr 127.0.0.1:0"; do
    # shellcheck disable=SC2086 # the settings are words on purpose
    a=$(instructions 500 $setting)
    # shellcheck disable=SC2086
    b=$(instructions 1500 $setting)
    printf '%-28s %7d instructions per push\n' "${setting:-(text log, the default)}" $(((b - a) / 1000))
done
