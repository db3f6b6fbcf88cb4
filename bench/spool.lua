-- wrk script: POST Telegram updates with unique, increasing update_ids spread over 50 chats (a
-- spool stores each once; equal bodies would be answered as duplicates), then print a JSON
-- summary line like post.lua.
--   BENCH_HEADERS  header lines separated by "\n" ("Name: value")
--   BENCH_START    the first update_id (default 1)
local counter = tonumber(os.getenv("BENCH_START") or "1")
local headers = { ["Content-Type"] = "application/json" }
for line in string.gmatch(os.getenv("BENCH_HEADERS") or "", "[^\n]+") do
  local name, value = string.match(line, "^([^:]+):%s*(.*)$")
  if name then
    headers[name] = value
  end
end
local text = string.rep("Please remind me about the meeting tomorrow at ten. ", 6)

request = function()
  local id = counter
  counter = counter + 1
  local chat = 100000 + id % 50
  local body = string.format(
    '{"update_id":%d,"message":{"message_id":%d,"from":{"id":%d,"is_bot":false,"first_name":"Ada"},' ..
    '"chat":{"id":%d,"first_name":"Ada","type":"private"},"date":1735689600,"text":"%s"}}',
    id, id, chat, chat, text)
  return wrk.format("POST", nil, headers, body)
end

done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'BENCH_JSON {"requests":%d,"duration_us":%d,"bytes":%d,"connect":%d,"read":%d,"write":%d,' ..
    '"status":%d,"timeout":%d,"p50_us":%d,"p90_us":%d,"p99_us":%d,"max_us":%d}\n',
    summary.requests, summary.duration, summary.bytes, e.connect, e.read, e.write,
    e.status, e.timeout, latency:percentile(50), latency:percentile(90),
    latency:percentile(99), latency.max))
end
