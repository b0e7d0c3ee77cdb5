#!/usr/bin/env bash
# `make bench`: criterion micro-benchmarks, then wrk load benchmarks of the release binary on
# loopback against a bare rouille handler (benches/floor.rs) and, when Python can provide Flask
# and gunicorn, the Flask app wxmp replaces. Prints one table and writes it to
# bench-results/latest.md (raw wrk output in bench-results/raw/).
#
# Knobs: BENCH_SECONDS (per wrk run, default 10), BENCH_THREADS (handler threads for wxmp and the
# floor, default wxmp's own default), BENCH_PIN=1 puts the server on the first half of the cores
# and wrk on the rest (default: both share all cores, wrk -t2), BENCH_MICRO=0 skips criterion,
# BENCH_PEER=0 skips Python, BENCH_ROWS runs only the rows named (space-separated, of W1 W2 W3 W4
# W5 W2long floor FWD held ACCT_ISO ACCT100 peer c1000 cache REDIS STORM; e.g. BENCH_ROWS="W2 floor" BENCH_MICRO=0) and
# BENCH_CONNS the connection counts of W1-W5 and the floor (default "50 1"), BENCH_WXMP another
# wxmp binary to measure (the one built from this tree by default).
#
# wrk shares the machine with the server, so req/s is what client and server reach together; the
# "server CPU" column (the server's own CPU time per request, from /proc) depends far less on that.
set -eu
cd "$(dirname "$0")/.."

SECS="${BENCH_SECONDS:-10}"
# Signed queries made per second of a run, an upper bound on req/s (running out is reported as
# repeated bodies, and the server refuses those): every request is signed afresh, as WeChat
# signs each push, so the figures include the replay window's checks.
POOL_RATE="${BENCH_POOL_RATE:-60000}"
TOKEN=benchtoken
ECHOSTR=5837397520665436492
OPENID=oia2TjjewbmiOUlr6X-1crbLOvLw
AES_KEY=abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG
APPID=wx2c2769f8efd9abc2
# wxmp's default (config::default_threads), passed to both servers so the floor is comparable.
cores=$(nproc)
default_threads=$((cores * 4 < 8 ? 8 : (cores * 4 > 64 ? 64 : cores * 4)))
THREADS="${BENCH_THREADS:-$default_threads}"
TARGET="${CARGO_TARGET_DIR:-target}"
WXMP="${BENCH_WXMP:-$TARGET/release/wxmp}"
FLOOR="$TARGET/release/examples/floor"
GEN="$TARGET/release/examples/gen_safe"
FWD="$TARGET/release/examples/forward_load"

die() { echo "bench: $*" >&2; exit 1; }
# want ROW: whether BENCH_ROWS (default: all) names ROW.
want() { [ -z "${BENCH_ROWS:-}" ] || [[ " $BENCH_ROWS " == *" $1 "* ]]; }

if ! command -v wrk >/dev/null; then
    echo "bench: installing wrk"
    sudo=""
    [ "$(id -u)" = 0 ] || sudo=sudo
    $sudo apt-get install -y wrk >/dev/null 2>&1 ||
        { $sudo apt-get update >/dev/null && $sudo apt-get install -y wrk >/dev/null; } ||
        die "cannot install wrk (apt-get install wrk)"
fi
command -v curl >/dev/null || die "curl is needed"
# 1000 connections on each side, plus the server's threads.
[ "$(ulimit -n)" -ge 8192 ] || ulimit -n 8192 2>/dev/null || ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

cargo build --release
cargo build --release --example floor --example gen_safe --example forward_load

out=bench-results
raw="$out/raw"
mkdir -p "$raw"
work=$(mktemp -d)
SPID=""
cleanup() {
    if [ -n "$SPID" ] && kill -0 "$SPID" 2>/dev/null; then
        kill "$SPID" 2>/dev/null || true
        wait "$SPID" 2>/dev/null || true
    fi
    # shellcheck disable=SC2086 # a list of pids (the Redis rows' servers)
    [ -z "${EXTRA_PIDS:-}" ] || kill $EXTRA_PIDS 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

load=$(cut -d' ' -f1 /proc/loadavg)
if awk -v l="$load" 'BEGIN { exit !(l > 0.5) }'; then
    echo "bench: warning: load average is $load before starting; other work on this machine will skew the numbers"
fi

if [ "${BENCH_MICRO:-1}" != 0 ]; then
    echo "== criterion micro-benchmarks"
    cargo bench --bench micro -- --output-format bencher | tee "$raw/micro.txt"
fi

# A plain-mode query signed now with a random nonce, for the requests made by hand: sha1 of the
# sorted, joined token/timestamp/nonce (byte order). The server refuses old timestamps.
fresh_q() {
    local ts nonce sig
    ts=$(date +%s)
    nonce=$(od -An -N4 -tu4 /dev/urandom | tr -d ' ')
    sig=$(printf '%s\n' "$TOKEN" "$ts" "$nonce" | LC_ALL=C sort | tr -d '\n' | sha1sum | cut -c1-40)
    echo "signature=$sig&timestamp=$ts&nonce=$nonce"
}
# Nonces of the pools; each pool starts past the last one's.
POOL_NONCE=1000000000
check_body="<xml><ToUserName><![CDATA[gh_7f083739789a]]></ToUserName><FromUserName><![CDATA[$OPENID]]></FromUserName><CreateTime>1700000000</CreateTime><MsgType><![CDATA[text]]></MsgType><Content><![CDATA[CONTENT]]></Content><MsgId>1</MsgId></xml>"

"$GEN" rules 500 >"$work/rules-500.toml.tail"
cat examples/rules.toml "$work/rules-500.toml.tail" >"$work/rules-500.toml"
rule_count=$("$WXMP" check-rules "$work/rules-500.toml" | tail -1 | sed 's/.*: \([0-9]*\) rules OK/\1/')

# start_server NAME CMD...: runs CMD in the background and waits for its "listening on" line.
start_server() {
    local name=$1
    shift
    : >"$work/$name.out"
    "$@" >"$work/$name.out" 2>"$work/$name.err" &
    SPID=$!
    SPORT=""
    for _ in $(seq 200); do
        SPORT=$(sed -n 's|.*listening on http://[^:]*:\([0-9][0-9]*\).*|\1|p' "$work/$name.out" | head -1)
        [ -n "$SPORT" ] && return 0
        kill -0 "$SPID" 2>/dev/null || { cat "$work/$name.err" >&2; die "$name exited at start-up"; }
        sleep 0.05
    done
    die "$name did not say where it listens"
}

stop_server() {
    kill "$SPID" 2>/dev/null || true
    wait "$SPID" 2>/dev/null || true
    SPID=""
}

start_wxmp() { # NAME [EXTRA ARGS...]
    local name=$1
    shift
    start_server "$name" "${PIN_SERVER[@]}" "$WXMP" serve --host 127.0.0.1 --port 0 --token "$TOKEN" --threads "$THREADS" "$@"
}

# Peak RSS (VmHWM) of a process and its children, in KiB.
peak_rss_kib() {
    local total=0 p
    for p in "$1" $(ps -o pid= --ppid "$1" 2>/dev/null); do
        total=$((total + $(awk '/^VmHWM:/ { print $2 }' "/proc/$p/status" 2>/dev/null || echo 0)))
    done
    echo "$total"
}

# CPU time (user + system, in clock ticks) of a process and its children.
cpu_ticks() {
    local total=0 p
    for p in "$1" $(ps -o pid= --ppid "$1" 2>/dev/null); do
        total=$((total + $(awk '{ print $14 + $15 }' "/proc/$p/stat" 2>/dev/null || echo 0)))
    done
    echo "$total"
}
CLK_TCK=$(getconf CLK_TCK)

# Busy CPU time of the whole machine (user, nice, system, irq, softirq, steal), in ticks.
busy_ticks() { awk '/^cpu / { print $2 + $3 + $4 + $7 + $8 + $9 }' /proc/stat; }

rss_kib() { awk '/^VmRSS:/ { print $2 }' "/proc/$1/status"; }

# expect URL NEEDLE [BODY]: one request by hand, so a run never measures error responses.
expect() {
    local got
    if [ $# -ge 3 ]; then
        got=$(curl -sS --max-time 5 -H 'Content-Type: text/xml' --data-binary "$3" "$1") || die "request to $1 failed"
    else
        got=$(curl -sS --max-time 5 "$1") || die "request to $1 failed"
    fi
    case "$got" in
        *"$2"*) ;;
        *) die "unexpected answer from $1: $got" ;;
    esac
}

# run_wrk KEY CONNS SCRIPT URL [SCRIPT ARGS...]: one wrk run; leaves its summary line in R
# (requests, p50_us, ...) and records a table row under KEY.
declare -A ROW RPS CPU P99 R
run_wrk() {
    local key=$1 conns=$2 script=$3 url=$4
    shift 4
    local t=$((conns < WRK_THREADS ? conns : WRK_THREADS))
    local log="$raw/$key.txt"
    # This run's signed queries, made just before it (text.lua and check.lua read them).
    local pool_count=$((POOL_RATE * SECS + 2000))
    # POOL_GEN / POOL_ARGS: another kind of pool (the accounts rows' whole targets).
    # shellcheck disable=SC2086 # POOL_ARGS is a list
    "$GEN" "${POOL_GEN:-queries}" "$work/pool" "$t" "$pool_count" "$POOL_NONCE" ${POOL_ARGS:-}
    POOL_NONCE=$((POOL_NONCE + pool_count))
    local cpu0 busy0 TIMEFORMAT='%3U %3S'
    cpu0=$(cpu_ticks "$SPID")
    busy0=$(busy_ticks)
    if ! { time BENCH_POOL="$work/pool" BENCH_LUA_THREADS=$t "${PIN_WRK[@]}" wrk -t"$t" -c"$conns" -d"${SECS}s" --timeout 5s \
        --latency -s "$script" "$url" -- "$@" >"$log" 2>&1; } 2>"$work/wrk-time"; then
        die "wrk failed; see $log"
    fi
    local line
    line=$(sed -n 's/^BENCH //p' "$log")
    [ -n "$line" ] || die "no summary from wrk; see $log"
    local kv
    for kv in $line; do
        R[${kv%%=*}]=${kv#*=}
    done
    local rps errors=0 detail="" kind cpu server_ticks other
    server_ticks=$(($(cpu_ticks "$SPID") - cpu0))
    rps=$(awk -v n="${R[requests]}" -v d="${R[duration_us]}" 'BEGIN { printf "%.0f", n / (d / 1e6) }')
    cpu=$(awk -v t="$server_ticks" -v hz="$CLK_TCK" -v n="${R[requests]}" \
        'BEGIN { printf "%.1f", (n > 0 ? t / hz * 1e6 / n : 0) }')
    # CPU used by neither the server nor wrk, in cores: other work on the machine (and some
    # kernel network processing), which makes a row less trustworthy.
    other=$(awk -v b="$(($(busy_ticks) - busy0))" -v s="$server_ticks" -v hz="$CLK_TCK" \
        -v w="$(awk '{ print $1 + $2 }' "$work/wrk-time")" -v d="${R[duration_us]}" \
        'BEGIN { o = ((b - s) / hz - w) / (d / 1e6); printf "%.2f", (o < 0 ? 0 : o) }')
    for kind in connect read write status timeout; do
        errors=$((errors + R[$kind]))
        [ "${R[$kind]}" = 0 ] || detail="$detail${detail:+, }$kind ${R[$kind]}"
    done
    R[errors]=$errors
    [ -z "$detail" ] || errors="$errors ($detail)"
    [ "${R[repeats]}" = 0 ] || errors="$errors; ${R[repeats]} repeated bodies"
    RPS[$key]=$rps
    CPU[$key]=$cpu
    P99[$key]=${R[p99_us]}
    ROW[$key]="$(awk -v r="$rps" -v a="${R[p50_us]}" -v b="${R[p99_us]}" -v m="$(peak_rss_kib "$SPID")" \
        'BEGIN { printf "%d | %.3f | %.3f | %.1f", r, a / 1000, b / 1000, m / 1024 }') | $cpu | $other | $errors"
    printf '  %-14s %5s conns: %8s req/s  %6s µs CPU/req  other %s cores  p50 %6.3f ms  p99 %6.3f ms  max %8.3f ms  errors %s\n' \
        "$key" "$conns" "$rps" "$cpu" "$other" "$(awk -v x="${R[p50_us]}" 'BEGIN { print x / 1000 }')" \
        "$(awk -v x="${R[p99_us]}" 'BEGIN { print x / 1000 }')" "$(awk -v x="${R[max_us]}" 'BEGIN { print x / 1000 }')" "$errors"
}

WRK_THREADS=2
PIN_SERVER=()
PIN_WRK=()
arrangement="server and wrk share all $cores cores"
if [ "${BENCH_PIN:-0}" = 1 ] && [ "$cores" -ge 2 ]; then
    half=$((cores / 2))
    PIN_SERVER=(taskset -c "0-$((half - 1))")
    PIN_WRK=(taskset -c "$half-$((cores - 1))")
    WRK_THREADS=$((cores - half))
    arrangement="server pinned to cores 0-$((half - 1)), wrk to $half-$((cores - 1))"
fi
W="http://127.0.0.1"
LONG_TEXT=$(printf '你好hello %.0s' $(seq 91)) # 1001 bytes
P="/weixin?openid=$OPENID"

echo "== wrk: ${SECS}s per run, $THREADS handler threads, wrk -t$WRK_THREADS, $arrangement"
for c in ${BENCH_CONNS:-50 1}; do
    if want W2; then
        start_wxmp "w2-c$c"
        expect "$W:$SPORT$P&$(fresh_q)" "hello 你好" "${check_body/CONTENT/hello 你好}"
        run_wrk "W2-c$c" "$c" benches/wrk/text.lua "$W:$SPORT$P" "hello 你好"
        stop_server
    fi

    # Right after W2, so the ratio compares neighbouring runs.
    if want floor; then
        start_server "floor-c$c" "${PIN_SERVER[@]}" "$FLOOR" --port 0 --threads "$THREADS"
        expect "$W:$SPORT$P&$(fresh_q)" "hello 你好" "${check_body/CONTENT/hello 你好}"
        run_wrk "floor-c$c" "$c" benches/wrk/text.lua "$W:$SPORT$P" "hello 你好"
        stop_server
    fi

    if want W1; then
        start_wxmp "w1-c$c"
        expect "$W:$SPORT/weixin?$(fresh_q)&echostr=$ECHOSTR" "$ECHOSTR"
        run_wrk "W1-c$c" "$c" benches/wrk/check.lua "$W:$SPORT/weixin?echostr=$ECHOSTR"
        stop_server
    fi

    if want W3; then
        start_wxmp "w3-c$c"
        expect "$W:$SPORT$P&$(fresh_q)" "北京天气挺好的！" "${check_body/CONTENT/天气}"
        run_wrk "W3-c$c" "$c" benches/wrk/text.lua "$W:$SPORT$P" "天气"
        stop_server
    fi

    if [ "$c" = 50 ] || [ -z "${safe_count:-}" ]; then
        # Enough distinct safe-mode bodies for the run, sized on W1 (a GET with no body, the
        # cheapest request) rather than W2, which run-to-run noise can put below W4.
        safe_count=$(awk -v r="${RPS[W1-c50]:-$POOL_RATE}" -v s="$SECS" 'BEGIN { printf "%d", r * s * 1.2 + 2000 }')
    fi
    # Made just before the run: each push is signed and timestamped when it is sealed.
    if want W4; then
        "$GEN" requests "$work/safe" "$WRK_THREADS" "$safe_count" $((9000000000000000 + c * 100000000))
        "$GEN" requests "$work/check" 1 1 $((8000000000000000 + c))
        safe_check_query=$(cut -d' ' -f1 "$work/check.0")
        safe_check_body=$(cut -d' ' -f2- "$work/check.0")
        start_wxmp "w4-c$c" --aes-key "$AES_KEY" --appid "$APPID"
        expect "$W:$SPORT$P&encrypt_type=aes&$safe_check_query" "<Encrypt>" "$safe_check_body"
        run_wrk "W4-c$c" "$c" benches/wrk/safe.lua "$W:$SPORT$P&encrypt_type=aes" "$work/safe"
        stop_server
    fi

    if want W5; then
        start_wxmp "w5-c$c" --rules "$work/rules-500.toml"
        expect "$W:$SPORT$P&$(fresh_q)" "hello 你好" "${check_body/CONTENT/hello 你好}"
        run_wrk "W5-c$c" "$c" benches/wrk/text.lua "$W:$SPORT$P" "hello 你好"
        stop_server
    fi

    if [ "$c" = 50 ] && want W2long; then
        # Not one of W1-W5: W2 with a 1 KB text, so the reply passes 1 KiB (as long echoes,
        # news and safe-mode replies of longer texts do), where the HTTP layer behaves differently.
        start_wxmp "w2long-c$c"
        expect "$W:$SPORT$P&$(fresh_q)" "$LONG_TEXT" "${check_body/CONTENT/$LONG_TEXT}"
        run_wrk "W2long-c$c" "$c" benches/wrk/text.lua "$W:$SPORT$P" "$LONG_TEXT"
        stop_server
    fi
done

# Forwarding to the user's own code: its cost against an endpoint that answers at once, and
# whether 200 pushes held on a slow endpoint (20 s, so every push runs into WeChat's deadline)
# slow anything else down.
start_endpoint() { # NAME DELAY_MS: leaves the URL in EP_URL and the pid in EP_PIDS
    "$FWD" endpoint "$2" >"$work/$1.out" 2>&1 &
    EP_PIDS="${EP_PIDS:-} $!"
    EP_URL=""
    for _ in $(seq 100); do
        EP_URL=$(sed -n 's/^listening on //p' "$work/$1.out")
        [ -n "$EP_URL" ] && return 0
        sleep 0.05
    done
    die "the $1 endpoint did not start"
}
fwd_conns="n/a"
if want FWD; then
    start_endpoint ep-now 0
    printf '[default]\nreply.forward = "%s"\n' "$EP_URL" >"$work/forward-echo.toml"
    start_wxmp fwd-c50 --rules "$work/forward-echo.toml"
    expect "$W:$SPORT$P&$(fresh_q)" "hello 你好" "${check_body/CONTENT/hello 你好}"
    run_wrk "FWD-c50" 50 benches/wrk/text.lua "$W:$SPORT$P" "hello 你好"
    stop_server
    # The endpoint prints its counts once a second; wait for the line that has them all.
    for _ in $(seq 30); do
        fwd_line=$(grep '^connections ' "$work/ep-now.out" | tail -1)
        [ "$(echo "$fwd_line" | cut -d' ' -f4)" -ge "${R[requests]}" ] 2>/dev/null && break
        sleep 0.2
    done
    fwd_conns=$(echo "$fwd_line" | awk '{ if ($4 > 0) printf "%d connections for %d calls (%.2f per 1,000)", $2, $4, $2 * 1000 / $4; else print "n/a" }')
    echo "  the endpoint accepted $fwd_conns"
fi
held_threads="n/a" hold_summary=""
if want held; then
    start_endpoint ep-slow 20000
    printf '[[rules]]\ntext = "hold"\nreply.forward = { url = "%s", fallback = { text = "wait" } }\n\n[default]\nreply = "echo"\n' \
        "$EP_URL" >"$work/forward-hold.toml"
    start_wxmp w2held-c50 --rules "$work/forward-hold.toml"
    # W2 alone on this same server first (its pool keeps threads for held attempts), so the ratio
    # compares like with like, measured a moment apart.
    expect "$W:$SPORT$P&$(fresh_q)" "hello 你好" "${check_body/CONTENT/hello 你好}"
    run_wrk "W2fwd-c50" 50 benches/wrk/text.lua "$W:$SPORT$P" "hello 你好"
    HOLD_SECS=$((SECS + 8))
    "$FWD" hold "127.0.0.1:$SPORT" "$TOKEN" 200 "$HOLD_SECS" >"$work/hold.out" 2>&1 &
    hold_pid=$!
    # The holders' first attempts are held for WeChat's 5 s; from then on about 200 pushes are held
    # at any moment (each loop has one push in flight, as WeChat would).
    sleep 6
    held_threads=$(awk '/^Threads:/ { print $2 }' "/proc/$SPID/status")
    expect "$W:$SPORT$P&$(fresh_q)" "hello 你好" "${check_body/CONTENT/hello 你好}"
    run_wrk "W2held-c50" 50 benches/wrk/text.lua "$W:$SPORT$P" "hello 你好"
    wait "$hold_pid" || true
    hold_summary=$(cat "$work/hold.out")
    stop_server
fi

# Many accounts in one server (issue 22). ACCT_ISO: account a2's W2 beside 200 pushes held on
# account a1's 20 s endpoint, against a2's W2 alone on the same server, a moment before.
# ACCT100: W2 spread over 100 accounts (each request to one account's path, signed with its own
# token) against W2 on a server of one account, with the same client script.
acct_iso_summary=""
if want ACCT_ISO; then
    start_endpoint ep-acct 20000
    printf '[[rules]]\ntext = "hold"\nreply.forward = { url = "%s", fallback = { text = "wait" } }\n\n[default]\nreply = "echo"\n' \
        "$EP_URL" >"$work/acct-hold.toml"
    printf '[[account]]\nname = "a1"\ntoken = "%s"\nrules = "acct-hold.toml"\n\n[[account]]\nname = "a2"\ntoken = "%s"\n' \
        "$TOKEN" "$TOKEN" >"$work/acct-iso.toml"
    chmod 600 "$work/acct-iso.toml"
    start_server acct-iso "${PIN_SERVER[@]}" "$WXMP" serve --host 127.0.0.1 --port 0 --threads "$THREADS" --accounts "$work/acct-iso.toml"
    A2="/weixin/a2?openid=$OPENID"
    expect "$W:$SPORT$A2&$(fresh_q)" "hello 你好" "${check_body/CONTENT/hello 你好}"
    run_wrk "ACCTalone-c50" 50 benches/wrk/text.lua "$W:$SPORT$A2" "hello 你好"
    "$FWD" hold "127.0.0.1:$SPORT" "$TOKEN" 200 $((SECS + 8)) /weixin/a1 >"$work/acct-hold.out" 2>&1 &
    hold_pid=$!
    # As in the held row: from 6 s on, about 200 pushes of a1 are held at any moment.
    sleep 6
    expect "$W:$SPORT$A2&$(fresh_q)" "hello 你好" "${check_body/CONTENT/hello 你好}"
    run_wrk "ACCTiso-c50" 50 benches/wrk/text.lua "$W:$SPORT$A2" "hello 你好"
    wait "$hold_pid" || true
    acct_iso_summary=$(cat "$work/acct-hold.out")
    stop_server
fi
if want ACCT100; then
    for n in 1 100; do
        "$GEN" accounts "$n" >"$work/acct-$n.toml"
        chmod 600 "$work/acct-$n.toml"
        start_server "acct$n" "${PIN_SERVER[@]}" "$WXMP" serve --host 127.0.0.1 --port 0 --threads "$THREADS" --accounts "$work/acct-$n.toml"
        expect "$W:$SPORT/weixin/a0?openid=$OPENID&$(TOKEN=benchtoken00000 fresh_q)" "hello 你好" "${check_body/CONTENT/hello 你好}"
        POOL_GEN=account-queries POOL_ARGS=$n run_wrk "ACCT$n-c50" 50 benches/wrk/accounts.lua "$W:$SPORT/" "hello 你好"
        stop_server
    done
fi

# shellcheck disable=SC2086 # a list of pids
kill ${EP_PIDS:-} 2>/dev/null || true

# Several instances on one Redis (`--store`): REDIS is W2 with the retry store on a local
# redis-server against W2 with memory, one after the other; STORM is three instances on that
# Redis, every push sent to all three at once (WeChat's retries landing on different instances),
# forwarded to an endpoint that counts its calls: one call per push, whatever the storm.
storm_line=""
if want REDIS || want STORM; then
    command -v redis-server >/dev/null || die "redis-server is needed for REDIS and STORM (apt-get install -y redis-server)"
    redis_port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
    redis-server --port "$redis_port" --bind 127.0.0.1 --save "" --appendonly no >"$work/redis.out" 2>&1 &
    redis_pid=$!
    EXTRA_PIDS="${EXTRA_PIDS:-} $redis_pid"
    for _ in $(seq 100); do
        (exec 3<>"/dev/tcp/127.0.0.1/$redis_port") 2>/dev/null && break
        sleep 0.05
    done
    STORE="redis://127.0.0.1:$redis_port/0"
    if want REDIS; then
        start_wxmp redis-mem-c50
        expect "$W:$SPORT$P&$(fresh_q)" "hello 你好" "${check_body/CONTENT/hello 你好}"
        run_wrk "REDISmem-c50" 50 benches/wrk/text.lua "$W:$SPORT$P" "hello 你好"
        stop_server
        start_wxmp redis-c50 --store "$STORE"
        expect "$W:$SPORT$P&$(fresh_q)" "hello 你好" "${check_body/CONTENT/hello 你好}"
        run_wrk "REDIS-c50" 50 benches/wrk/text.lua "$W:$SPORT$P" "hello 你好"
        stop_server
    fi
    if want STORM; then
        start_endpoint ep-storm 0
        EXTRA_PIDS="$EXTRA_PIDS ${EP_PIDS##* }" # started after the other endpoints were stopped
        printf '[default]\nreply.forward = "%s"\n' "$EP_URL" >"$work/forward-storm.toml"
        storm_addrs=""
        for i in 1 2 3; do
            start_wxmp "storm-$i" --rules "$work/forward-storm.toml" --store "$STORE"
            EXTRA_PIDS="$EXTRA_PIDS $SPID"
            storm_addrs="$storm_addrs 127.0.0.1:$SPORT"
            SPID=""
        done
        # shellcheck disable=SC2086 # a list of addresses
        "$FWD" storm "$TOKEN" "$SECS" "${BENCH_STORM_CONNS:-50}" $storm_addrs >"$work/storm.out" 2>&1 ||
            die "the storm failed: $(cat "$work/storm.out")"
        read -r _ pushes _ requests _ storm_secs _ storm_errors _ differing _ fallbacks _ <"$work/storm.out"
        # The endpoint prints its counts once a second; wait for the line that has them all.
        for _ in $(seq 30); do
            storm_calls=$(grep '^connections ' "$work/ep-storm.out" | tail -1 | cut -d' ' -f4)
            [ "${storm_calls:-0}" -ge "$pushes" ] 2>/dev/null && break
            sleep 0.2
        done
        storm_verdict=$([ "${storm_calls:-0}" = "$pushes" ] && echo "PASS: exactly one per push" || echo "FAIL: not one per push")
        for i in 1 2 3; do cp "$work/storm-$i.err" "$raw/storm-$i.log"; done
        storm_line=$(awk -v r="$requests" -v p="$pushes" -v s="$storm_secs" -v c="${storm_calls:-0}" -v e="$storm_errors" -v d="$differing" -v f="$fallbacks" -v v="$storm_verdict" -v n="${BENCH_STORM_CONNS:-50}" \
            'BEGIN { printf "%d req/s (%d pushes/s, each sent to all 3 instances at once, %d loops); the endpoint saw %d calls for %d pushes (%s); %d errors, %d pushes answered differently, %d with a fallback", r / s, p / s, n, c, p, v, e, d, f }')
        echo "  STORM: $storm_line"
    fi
fi

# The Flask app wxmp replaces, under gunicorn: one worker process per core, each with 4 threads
# (gthread keeps connections alive, as wrk's do; sync workers close every connection), so it
# has as many handler threads as wxmp.
peer=""
if want peer && [ "${BENCH_PEER:-1}" != 0 ] && command -v python3 >/dev/null; then
    if python3 -c 'import flask, gunicorn' 2>/dev/null ||
        python3 -m pip install --quiet flask gunicorn >"$work/pip.log" 2>&1; then
        peer_port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
        peer_workers=$cores
        peer_threads=$(((THREADS + cores - 1) / cores))
        for c in 50 1; do
            WXMP_TOKEN=$TOKEN "${PIN_SERVER[@]}" python3 -m gunicorn --workers "$peer_workers" --worker-class gthread \
                --threads "$peer_threads" --bind "127.0.0.1:$peer_port" --chdir benches \
                --log-level warning peer_flask:app >"$work/peer.out" 2>"$work/peer.err" &
            SPID=$!
            SPORT=$peer_port
            for _ in $(seq 100); do
                curl -sf "$W:$SPORT/weixin?$(fresh_q)&echostr=1" >/dev/null 2>&1 && break
                kill -0 "$SPID" 2>/dev/null || { cat "$work/peer.err" >&2; die "gunicorn exited at start-up"; }
                sleep 0.1
            done
            expect "$W:$SPORT$P&$(fresh_q)" "hello 你好" "${check_body/CONTENT/hello 你好}"
            run_wrk "peer-c$c" "$c" benches/wrk/text.lua "$W:$SPORT$P" "hello 你好"
            stop_server
        done
        peer="Flask $(python3 -c 'import importlib.metadata as m; print(m.version("flask"))') under gunicorn $(python3 -c 'import gunicorn; print(gunicorn.__version__)') (-k gthread, $peer_workers workers x $peer_threads threads)"
    else
        echo "bench: Flask/gunicorn unavailable; skipping the Python peer (see pip output: $(tail -1 "$work/pip.log"))"
    fi
fi

# 1000 keep-alive connections: WeChat gives up after 5 s, so every request must be answered
# within that (wrk counts anything slower as a timeout).
c1000_verdict="not run" c1000_threads="n/a"
if want c1000; then
    start_wxmp w2-c1000
    expect "$W:$SPORT$P&$(fresh_q)" "hello 你好" "${check_body/CONTENT/hello 你好}"
    run_wrk "W2-c1000" 1000 benches/wrk/text.lua "$W:$SPORT$P" "hello 你好"
    c1000_errors=${R[errors]}
    c1000_max_ms=$(awk -v x="${R[max_us]}" 'BEGIN { printf "%.1f", x / 1000 }')
    c1000_requests=${R[requests]}
    c1000_threads=$(awk '/^Threads:/ { print $2 }' "/proc/$SPID/status")
    stop_server
    if [ "$c1000_errors" = 0 ] && [ "${R[max_us]}" -lt 5000000 ]; then
        c1000_verdict="PASS: all $c1000_requests answered, none errored, slowest $c1000_max_ms ms (< 5 s)"
    else
        c1000_verdict="FAIL: ${ROW[W2-c1000]##*| } errors, slowest $c1000_max_ms ms (deadline 5 s)"
    fi
fi

# Retry cache: fill it with distinct pushes, then compare RSS with the cache empty and full.
# Entries that fit and their accounted bytes come from wxmp's own accounting (gen_safe cache).
cache_lines=""
declare -A ENTRIES BASE FULL
if want cache; then
    for mb in 8 32; do
        read -r entries accounted < <("$GEN" cache "$mb")
        start_wxmp "cache-$mb" --cache-mb "$mb"
        # Warm up with URL checks (no cache entries), so threads and buffers exist before the baseline.
        SECS=2 run_wrk "cache-warm-$mb" 50 benches/wrk/check.lua "$W:$SPORT/weixin?echostr=$ECHOSTR" >/dev/null
        base=$(rss_kib "$SPID")
        fill_secs=$(awk -v e="$entries" -v r="${RPS[W2-c50]}" 'BEGIN { s = int(2 * e / r) + 2; print (s > 60 ? 60 : s) }')
        SECS=$fill_secs run_wrk "cache-fill-$mb" 50 benches/wrk/text.lua "$W:$SPORT$P" "hello 你好" >/dev/null
        full=$(rss_kib "$SPID")
        [ "${R[requests]}" -ge $((entries * 3 / 2)) ] ||
            echo "bench: warning: only ${R[requests]} pushes for $entries entries; the $mb MiB cache may not be full"
        stop_server
        ENTRIES[$mb]=$entries BASE[$mb]=$base FULL[$mb]=$full
        cache_lines="$cache_lines$(awk -v mb="$mb" -v e="$entries" -v a="$accounted" -v b="$base" -v f="$full" 'BEGIN {
            printf "- `--cache-mb %d`: %d entries fit; accounted %.0f B/entry (%.1f MiB); RSS %.1f MiB empty, %.1f MiB full: %.0f B/entry measured\n",
                mb, e, a / e, a / 1048576, b / 1024, f / 1024, (f - b) * 1024 / e }')
    "
    done
    cache_lines="$cache_lines$(awk -v e8="${ENTRIES[8]}" -v e32="${ENTRIES[32]}" -v f8="${FULL[8]}" -v f32="${FULL[32]}" -v b8="${BASE[8]}" -v b32="${BASE[32]}" 'BEGIN {
        printf "- marginal cost from 8 to 32 MiB: %.0f B/entry (RSS growth over the extra entries, baselines subtracted)\n",
            ((f32 - b32) - (f8 - b8)) * 1024 / (e32 - e8) }')"
fi

ratio() { awk -v a="${RPS[$1]:-0}" -v b="${RPS[$2]:-0}" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "n/a" }'; }
# Server CPU per request, first over second (>1 means the first costs more).
cpu_ratio() { awk -v a="${CPU[$1]:-0}" -v b="${CPU[$2]:-0}" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "n/a" }'; }

label() {
    case "$1" in
        W1) echo "W1 GET URL verification" ;;
        W2) echo "W2 text echo (\`hello 你好\`)" ;;
        W3) echo "W3 text rule (\`天气\`)" ;;
        W4) echo "W4 safe mode (W2 encrypted)" ;;
        W5) echo "W5 W2 + $rule_count rules (500 regex)" ;;
        W2long) echo "W2 with a 1 KB text (reply > 1 KiB)" ;;
        FWD) echo "W2 forwarded to an endpoint that answers at once" ;;
        W2fwd) echo "W2 alone on the server of the next row" ;;
        W2held) echo "W2 beside 200 pushes held on a 20 s endpoint" ;;
        ACCTalone) echo "accounts: W2 on account 2 alone (next row's server)" ;;
        ACCTiso) echo "accounts: W2 on account 2 beside 200 pushes held on account 1" ;;
        ACCT1) echo "accounts: W2 on a server of one account" ;;
        ACCT100) echo "accounts: W2 spread over 100 accounts" ;;
        floor) echo "floor: bare rouille + xmltree echo" ;;
        REDISmem) echo "W2, memory store (beside the next row)" ;;
        REDIS) echo "W2 with \`--store redis://\` (local redis-server)" ;;
        peer) echo "peer: Flask + gunicorn" ;;
    esac
}

{
    echo "wxmp $("$WXMP" --version | cut -d' ' -f2), $(date -u +%Y-%m-%dT%H:%M:%SZ), $cores cores ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//')), load average $load at start; $THREADS handler threads; $arrangement; wrk -t$WRK_THREADS, ${SECS}s per run, timestamp/nonce fixed, fresh MsgId per push."
    echo
    echo "Server CPU: the server's own user + system time per request. Other load: CPU that neither the server nor wrk used meanwhile (other work on the machine); a row with more than ~0.1 is disturbed."
    echo
    echo "| workload | conns | req/s | p50 ms | p99 ms | peak RSS MiB | server CPU µs/req | other load (cores) | errors |"
    echo "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |"
    for c in 50 1; do
        for w in W1 W2 W3 W4 W5 W2long FWD W2fwd W2held ACCTalone ACCTiso ACCT1 ACCT100 floor peer; do
            [ -n "${ROW[$w-c$c]:-}" ] && echo "| $(label "$w") | $c | ${ROW[$w-c$c]} |"
        done
    done
    [ -z "${ROW[W2-c1000]:-}" ] || echo "| W2 text echo, 1000 connections | 1000 | ${ROW[W2-c1000]} |"
    for w in REDISmem REDIS; do
        [ -z "${ROW[$w-c50]:-}" ] || echo "| $(label "$w") | 50 | ${ROW[$w-c50]} |"
    done
    echo
    echo "Ratios of req/s (in brackets: of server CPU per request, >1 = costs more):"
    echo
    echo "- W2 / floor: $(ratio W2-c50 floor-c50) at 50 connections, $(ratio W2-c1 floor-c1) at 1 (CPU $(cpu_ratio W2-c50 floor-c50), $(cpu_ratio W2-c1 floor-c1)); 1.00 = nothing on top of rouille + xmltree"
    echo "- W4 / W2 (safe mode): $(ratio W4-c50 W2-c50) at 50, $(ratio W4-c1 W2-c1) at 1 (CPU $(cpu_ratio W4-c50 W2-c50), $(cpu_ratio W4-c1 W2-c1))"
    echo "- W5 / W2 ($rule_count rules): $(ratio W5-c50 W2-c50) at 50, $(ratio W5-c1 W2-c1) at 1 (CPU $(cpu_ratio W5-c50 W2-c50), $(cpu_ratio W5-c1 W2-c1))"
    echo "- W2 with a 1 KB text / W2: $(ratio W2long-c50 W2-c50) at 50 connections (CPU $(cpu_ratio W2long-c50 W2-c50))"
    echo "- forwarding: a forwarded echo / W2 = $(ratio FWD-c50 W2-c50) (CPU $(cpu_ratio FWD-c50 W2-c50)), the endpoint accepted $fwd_conns; W2 beside 200 held pushes / W2 alone on that server = $(ratio W2held-c50 W2fwd-c50), p99 $(awk -v a="${P99[W2held-c50]:-0}" -v b="${P99[W2fwd-c50]:-0}" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "n/a" }')x (target: rate >= 0.8, 0 errors; / W2 on the plain server: $(ratio W2held-c50 W2-c50)); $held_threads server threads while held; $hold_summary"
    [ -z "$peer" ] || echo "- W2 / peer: wxmp serves $(ratio W2-c50 peer-c50)x the requests of $peer at 50 connections, $(ratio W2-c1 peer-c1)x at 1 (the peer uses $(cpu_ratio peer-c50 W2-c50)x, $(cpu_ratio peer-c1 W2-c1)x wxmp's CPU per request)"
    echo "- accounts: W2 on account 2 beside 200 pushes held on account 1 / alone = $(ratio ACCTiso-c50 ACCTalone-c50) (target >= 0.8; $acct_iso_summary); W2 spread over 100 accounts / on one account = $(ratio ACCT100-c50 ACCT1-c50) (target >= 0.9; CPU $(cpu_ratio ACCT100-c50 ACCT1-c50))"
    echo "- 1000 connections: $c1000_verdict; $c1000_threads server threads"
    [ -z "${ROW[REDIS-c50]:-}" ] || echo "- W2 on Redis / W2 on memory: $(ratio REDIS-c50 REDISmem-c50) at 50 connections (CPU $(cpu_ratio REDIS-c50 REDISmem-c50); target >= 0.7)"
    [ -z "$storm_line" ] || echo "- STORM, three instances on one Redis: $storm_line"
    echo
    echo "Retry cache (W2 answers; entries counted by wxmp's own accounting):"
    echo
    echo "$cache_lines"
} >"$work/table.md"

{
    cat "$work/table.md"
    if [ -s "$raw/micro.txt" ]; then
        echo
        echo "Micro-benchmarks (criterion, median):"
        echo
        echo "| benchmark | time |"
        echo "| --- | ---: |"
        awk '/^test .* bench:/ {
            n = $5; gsub(",", "", n); n += 0
            t = (n >= 1000000 ? sprintf("%.2f ms", n / 1e6) : n >= 1000 ? sprintf("%.2f µs", n / 1e3) : n " ns")
            print "| " $2 " | " t " |" }' "$raw/micro.txt"
    fi
} >"$out/latest.md"

echo
cat "$work/table.md"
echo
echo "Written to $out/latest.md (raw wrk output in $raw/)."
