#!/usr/bin/env bash
# What a push costs wxmp against the framework floor, measured so that load on the machine does
# not move the figures: user-space instructions per push (valgrind's callgrind; (instructions for
# 1500 pushes - for 500) / 1000, so start-up and shutdown cancel out) for W2 (a plain text push,
# the access log on, as by default), the floor (benches/floor.rs: bare rouille + xmltree) and W4
# (W2 in safe mode, pushes sealed beforehand by benches/gen_safe.rs). One keep-alive connection,
# fresh MsgIds. PUSH_COST_WXMP=path measures another wxmp binary; PUSH_COST_KEEP=DIR keeps the
# callgrind files (callgrind_annotate --inclusive=yes DIR/w2-1500.out shows where the time goes).
set -eu
shopt -s inherit_errexit
cd "$(dirname "$0")/.."
command -v valgrind >/dev/null || { apt-get install -y valgrind >/dev/null 2>&1 ||
    { apt-get update >/dev/null && apt-get install -y valgrind >/dev/null; }; }
cargo build --release --bin wxmp --example floor --example gen_safe
target=$(cargo metadata --format-version 1 --no-deps | sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')
bin="${PUSH_COST_WXMP:-${target:-target}/release/wxmp}"
floor="${target:-target}/release/examples/floor"
gen="${target:-target}/release/examples/gen_safe"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
keep="${PUSH_COST_KEEP:-$work}"
mkdir -p "$keep"

# drive.py PORT N | drive.py PORT FILE: N plain pushes, or the sealed pushes in FILE.
cat >"$work/drive.py" <<'PY'
import hashlib, http.client, sys, time
port, what = int(sys.argv[1]), sys.argv[2]
conn = http.client.HTTPConnection("127.0.0.1", port)
def send(query, body):
    conn.request("POST", "/weixin?openid=oia2TjjewbmiOUlr6X-1crbLOvLw&" + query, body, {"Content-Type": "text/xml"})
    resp = conn.getresponse()
    resp.read()
    assert resp.status == 200, resp.status
if what.isdigit():
    for i in range(1, int(what) + 1):
        ts, nonce = str(int(time.time())), str(i)
        sig = hashlib.sha1("".join(sorted(["benchtoken", ts, nonce])).encode()).hexdigest()
        send("signature=%s&timestamp=%s&nonce=%s" % (sig, ts, nonce),
             ("<xml><ToUserName><![CDATA[gh_7f083739789a]]></ToUserName>"
              "<FromUserName><![CDATA[oia2TjjewbmiOUlr6X-1crbLOvLw]]></FromUserName>"
              "<CreateTime>1700000000</CreateTime><MsgType><![CDATA[text]]></MsgType>"
              "<Content><![CDATA[hello 你好]]></Content><MsgId>%d</MsgId></xml>" % i).encode())
else:
    for line in open(what):
        query, body = line.rstrip("\n").split(" ", 1)
        send("encrypt_type=aes&" + query, body.encode())
PY

# instructions NAME N CMD...: callgrind's total for CMD (a server that prints where it listens)
# while N pushes are sent (N plain ones, or the sealed ones of $work/safe-N.0 for safe mode).
instructions() {
    local name=$1 n=$2 port="" pid what
    shift 2
    valgrind --tool=callgrind --callgrind-out-file="$keep/$name-$n.out" "$@" >"$work/out" 2>"$work/err" &
    pid=$!
    for _ in $(seq 600); do
        port=$(sed -n 's|.*listening on http://[^:]*:\([0-9]*\).*|\1|p' "$work/out" | head -1)
        [ -n "$port" ] && break
        sleep 0.1
    done
    [ -n "$port" ] || { cat "$work/err" >&2; exit 1; }
    what=$n
    [ "$name" != w4 ] || what="$work/safe-$n.0"
    python3 "$work/drive.py" "$port" "$what"
    kill -TERM "$pid"
    wait "$pid" || true
    sed -n 's/.*Collected : \([0-9]*\).*/\1/p' "$work/err"
}

serve=("$bin" serve --host 127.0.0.1 --port 0 --token benchtoken --threads 2)
for n in 500 1500; do
    # Sealed and timestamped now: the replay window refuses old pushes.
    "$gen" requests "$work/safe-$n" 1 "$n" $((9000000000000000 + n * 100000))
done
for row in w2 floor w4; do
    case $row in
        w2) cmd=("${serve[@]}") ;;
        floor) cmd=("$floor" --port 0 --threads 2) ;;
        w4) cmd=("${serve[@]}" --aes-key abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG --appid wx2c2769f8efd9abc2) ;;
    esac
    a=$(instructions "$row" 500 "${cmd[@]}")
    b=$(instructions "$row" 1500 "${cmd[@]}")
    printf '%-6s %7d instructions per push\n' "$row" $(((b - a) / 1000))
done
