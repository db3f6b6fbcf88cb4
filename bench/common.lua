-- What every bench wrk script shares (loaded with dofile from $BENCH_LUA, set by bench.py):
--   headers()  the header lines of $BENCH_HEADERS ("Name: value", separated by "\n") as a table
--   done       wrk's done hook: one BENCH_JSON summary line, read by bench.py's load_client
local common = {}

function common.headers()
  local out = {}
  for line in string.gmatch(os.getenv("BENCH_HEADERS") or "", "[^\n]+") do
    local name, value = string.match(line, "^([^:]+):%s*(.*)$")
    if name then
      out[name] = value
    end
  end
  return out
end

function common.done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'BENCH_JSON {"requests":%d,"duration_us":%d,"bytes":%d,"connect":%d,"read":%d,"write":%d,' ..
    '"status":%d,"timeout":%d,"p50_us":%d,"p90_us":%d,"p99_us":%d,"max_us":%d}\n',
    summary.requests, summary.duration, summary.bytes, e.connect, e.read, e.write,
    e.status, e.timeout, latency:percentile(50), latency:percentile(90),
    latency:percentile(99), latency.max))
end

return common
