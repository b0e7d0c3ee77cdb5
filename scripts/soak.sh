#!/usr/bin/env bash
# make soak: starts the release server on a free loopback port in safe mode, sends it
# SOAK_REQUESTS (default 1 000 000) mixed requests over SOAK_CONNECTIONS (default 50) keep-alive
# connections with examples/soak.rs, and fails on any 5xx, wrong answer, RSS growth over 10%,
# a panic in the server log or an unclean stop.
#
# Meanwhile (unless SOAK_HOSTILE=0) examples/soak_hostile.rs sends the traffic of each finding
# of issue 9 (HTTP/2 prefaces, idle floods, unread pipelines, endless chunk-size lines, trickled
# bodies, smuggling, oversized heads, control bytes) and fails on any unexpected answer; at the
# end the server's descriptors and threads must be back where they started, and its peak RSS
# under SOAK_RSS_LIMIT_MB (default 128). SOAK_HOSTILE_KINDS=a,b runs only those kinds.
set -eu
cd "$(dirname "$0")/.."
requests=${SOAK_REQUESTS:-1000000}
connections=${SOAK_CONNECTIONS:-50}
token=soaktoken
aes_key=abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG
appid=wx2c2769f8efd9abc2

hostile=${SOAK_HOSTILE:-1}
rss_limit_mb=${SOAK_RSS_LIMIT_MB:-128}

cargo build --release --bin wxmp --example soak --example soak_hostile
bin=${CARGO_TARGET_DIR:-target}/release

logs=$(mktemp -d)
server_pid=
hostile_pid=
# shellcheck disable=SC2317 # called by the trap
cleanup() {
    if [ -n "$hostile_pid" ] && kill -0 "$hostile_pid" 2>/dev/null; then
        kill "$hostile_pid" 2>/dev/null || true
    fi
    if [ -n "$server_pid" ] && kill -0 "$server_pid" 2>/dev/null; then
        kill "$server_pid" 2>/dev/null || true
    fi
}
trap cleanup EXIT

# --port 0 lets the kernel pick a free port; the banner says which.
# --cache-mb 16: the retry cache fills twice within the first 100 000 requests, so the RSS taken
# there is the steady state the end is compared with (the default 32 MB is only just full then,
# and RSS still rises some 15% while the first entries are evicted).
# --quiet: a line per request would be a million lines on disk; refusals are still logged.
# MALLOC_ARENA_MAX=1: with glibc's default of a heap per thread (up to 8 per core) the heaps
# fragment and RSS creeps up by a few % per million requests whatever the program does; one heap
# keeps the measurement about wxmp's own memory.
# glibc.malloc.tcache_count=0, for the same reason: the hostile mix's floods make hundreds of
# connection threads, and glibc's per-thread caches of freed chunks then hold memory and fragment
# the heap (measured: RSS rises for about 1.5 million requests to a plateau near 62 MiB, against
# 35 MiB flat without the caches). They cost CPU to turn off, so production keeps them.
env -u WXMP_HOST -u WXMP_PORT -u WXMP_PATH -u WXMP_TOKEN -u WXMP_AES_KEY -u WXMP_APPID \
    -u WXMP_RULES -u WXMP_THREADS -u WXMP_CACHE_MB -u WXMP_CACHE_TTL -u WXMP_LOG_FORMAT \
    -u WXMP_QUIET -u WXMP_LOG_OPENID -u WXMP_METRICS_ADDR -u WXMP_MAX_CONNECTIONS MALLOC_ARENA_MAX=1 \
    GLIBC_TUNABLES=glibc.malloc.tcache_count=0 \
    "$bin/wxmp" --host 127.0.0.1 --port 0 --token "$token" --aes-key "$aes_key" \
    --appid "$appid" --cache-mb 16 --quiet >"$logs/stdout" 2>"$logs/stderr" &
server_pid=$!
addr=
for _ in $(seq 100); do
    # The file may not exist yet: the shell creates it when the background job starts.
    addr=$(sed -n 's|^{"listening":{"http":"\([^"]*\)".*|\1|p' "$logs/stdout" 2>/dev/null || true)
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

fds() { find "/proc/$server_pid/fd" -mindepth 1 -maxdepth 1 2>/dev/null | wc -l; }
threads() { awk '$1 == "Threads:" { print $2 }' "/proc/$server_pid/status"; }
rss_mib() { awk '$1 == "VmRSS:" { print int($2 / 1024) }' "/proc/$server_pid/status"; }
base_fds=$(fds)
base_threads=$(threads)
echo "soak: at start: $base_fds descriptors, $base_threads threads, $(rss_mib) MiB RSS"

status=0
if [ "$hostile" != 0 ]; then
    "$bin/examples/soak_hostile" --addr "$addr" --token "$token" --pid "$server_pid" \
        --stop-file "$logs/stop-hostile" ${SOAK_HOSTILE_KINDS:+--kinds "$SOAK_HOSTILE_KINDS"} \
        >"$logs/hostile.out" 2>&1 &
    hostile_pid=$!
fi
"$bin/examples/soak" --addr "$addr" --token "$token" --aes-key "$aes_key" \
    --appid "$appid" --pid "$server_pid" --requests "$requests" \
    --connections "$connections" || status=$?

if [ -n "$hostile_pid" ]; then
    touch "$logs/stop-hostile"
    hostile_status=0
    wait "$hostile_pid" || hostile_status=$?
    hostile_pid=
    cat "$logs/hostile.out"
    [ "$hostile_status" -eq 0 ] || status=1
    peak=$(sed -n 's/.*peak RSS \([0-9]*\) MiB.*/\1/p' "$logs/hostile.out")
    if [ -z "$peak" ] || [ "$peak" -ge "$rss_limit_mb" ]; then
        echo "soak: peak RSS ${peak:-?} MiB during the hostile mix, limit $rss_limit_mb MiB" >&2
        status=1
    fi
fi
# Connections closed, their threads gone (idle pool threads end after 5 s): back to the start.
settled=
for _ in $(seq 60); do
    if [ "$(fds)" -le "$base_fds" ] && [ "$(threads)" -le "$base_threads" ]; then
        settled=1
        break
    fi
    sleep 0.5
done
echo "soak: at the end: $(fds) descriptors, $(threads) threads, $(rss_mib) MiB RSS"
if [ -z "$settled" ]; then
    echo "soak: descriptors or threads did not return to $base_fds / $base_threads" >&2
    status=1
fi

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
