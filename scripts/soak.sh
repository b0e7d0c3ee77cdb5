#!/usr/bin/env bash
# make soak: starts the release server on a free loopback port in safe mode, sends it
# SOAK_REQUESTS (default 1 000 000) mixed requests over SOAK_CONNECTIONS (default 50) keep-alive
# connections with examples/soak.rs, and fails on any 5xx, wrong answer, RSS growth over 10%,
# a panic in the server log or an unclean stop.
set -eu
cd "$(dirname "$0")/.."
requests=${SOAK_REQUESTS:-1000000}
connections=${SOAK_CONNECTIONS:-50}
token=soaktoken
aes_key=abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG
appid=wx2c2769f8efd9abc2

cargo build --release --bin wxmp --example soak
bin=${CARGO_TARGET_DIR:-target}/release

logs=$(mktemp -d)
server_pid=
# shellcheck disable=SC2317 # called by the trap
cleanup() {
    if [ -n "$server_pid" ] && kill -0 "$server_pid" 2>/dev/null; then
        kill "$server_pid" 2>/dev/null || true
    fi
}
trap cleanup EXIT

# --port 0 lets the kernel pick a free port; the banner says which.
# --cache-mb 16: the retry cache fills twice within the first 100 000 requests, so the RSS taken
# there is the steady state the end is compared with (the default 32 MB is only just full then,
# and RSS still rises some 15% while the first entries are evicted).
# MALLOC_ARENA_MAX=1: with glibc's default of a heap per thread (up to 8 per core) the heaps
# fragment and RSS creeps up by a few % per million requests whatever the program does; one heap
# keeps the measurement about wxmp's own memory.
env -u WXMP_HOST -u WXMP_PORT -u WXMP_PATH -u WXMP_TOKEN -u WXMP_AES_KEY -u WXMP_APPID \
    -u WXMP_RULES -u WXMP_THREADS -u WXMP_CACHE_MB -u WXMP_CACHE_TTL -u WXMP_LOG_FORMAT \
    -u WXMP_QUIET -u WXMP_LOG_OPENID -u WXMP_METRICS_ADDR MALLOC_ARENA_MAX=1 \
    "$bin/wxmp" --host 127.0.0.1 --port 0 --token "$token" --aes-key "$aes_key" \
    --appid "$appid" --cache-mb 16 >"$logs/stdout" 2>"$logs/stderr" &
server_pid=$!
addr=
for _ in $(seq 100); do
    addr=$(sed -n 's|.*listening on http://\([^/]*\)/.*|\1|p' "$logs/stdout")
    [ -n "$addr" ] && break
    kill -0 "$server_pid" 2>/dev/null || break
    sleep 0.1
done
if [ -z "$addr" ]; then
    echo "soak: the server did not start:" >&2
    cat "$logs/stdout" "$logs/stderr" >&2
    exit 1
fi
echo "soak: server pid $server_pid on $addr (logs in $logs)"

status=0
"$bin/examples/soak" --addr "$addr" --token "$token" --aes-key "$aes_key" \
    --appid "$appid" --pid "$server_pid" --requests "$requests" \
    --connections "$connections" || status=$?

kill -TERM "$server_pid"
server_status=0
wait "$server_pid" || server_status=$?
server_pid=
if [ "$server_status" -ne 0 ]; then
    echo "soak: the server exited with status $server_status on SIGTERM" >&2
    status=1
fi
if grep -q panicked "$logs/stderr"; then
    echo "soak: the server log shows a panic:" >&2
    grep -m5 panicked "$logs/stderr" >&2
    status=1
fi
if [ "$status" -eq 0 ]; then
    rm -rf "$logs"
    echo "soak: PASS"
else
    echo "soak: FAIL (server logs kept in $logs)" >&2
fi
exit "$status"
