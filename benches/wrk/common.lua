-- Shared by the wrk scripts of scripts/bench.sh (loaded with dofile; run wrk from the repo
-- root).

-- wrk calls setup() for thread i just before init() runs in that thread, so the thread count
-- cannot be counted here: the script passes it in BENCH_LUA_THREADS.
local threads = {}
local nthreads = tonumber(os.getenv("BENCH_LUA_THREADS") or "1")

function setup(thread)
  thread:set("tid", #threads)
  thread:set("nthreads", nthreads)
  table.insert(threads, thread)
end

-- Signed queries made by `gen_safe queries` just before the run (the server's replay window
-- refuses old timestamps and a query reused on another body; LuaJIT has no SHA-1): thread i
-- reads BENCH_POOL.i, one `signature=…&timestamp=…&nonce=…` per line. Running out wraps around
-- and counts repeats, which scripts/bench.sh reports.
repeats = 0 -- requests that resent a query or body (read back by done())
local pool
local wrapped = false

function next_line(prefix)
  if not pool then
    pool = assert(io.open((prefix or os.getenv("BENCH_POOL")) .. "." .. tid, "r"))
  end
  local line = pool:read("*l")
  if not line then
    wrapped = true
    pool:seek("set")
    line = pool:read("*l")
  end
  if wrapped then
    repeats = repeats + 1
  end
  return line
end

-- 16 digits like WeChat's MsgIds, unique per (thread, counter), so retries never hit the cache.
function msg_id(tid, n)
  return string.format("7%03d%012d", tid, n)
end

-- The same text push as benches/common.rs.
function text_message(content, id)
  return "<xml><ToUserName><![CDATA[gh_7f083739789a]]></ToUserName>"
    .. "<FromUserName><![CDATA[oia2TjjewbmiOUlr6X-1crbLOvLw]]></FromUserName>"
    .. "<CreateTime>1700000000</CreateTime><MsgType><![CDATA[text]]></MsgType>"
    .. "<Content><![CDATA[" .. content .. "]]></Content><MsgId>" .. id .. "</MsgId></xml>"
end

-- One machine-readable line for scripts/bench.sh; wrk's own report is printed above it.
function done(summary, latency, requests)
  local e = summary.errors
  local repeats = 0
  for _, t in ipairs(threads) do
    repeats = repeats + (tonumber(t:get("repeats")) or 0)
  end
  io.write(string.format(
    "BENCH requests=%d duration_us=%d p50_us=%d p99_us=%d max_us=%d connect=%d read=%d write=%d status=%d timeout=%d repeats=%d\n",
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99),
    latency.max, e.connect, e.read, e.write, e.status, e.timeout, repeats))
end
