-- wrk script: POST Telegram updates with unique, increasing update_ids spread over 50 chats (a
-- spool stores each once; equal bodies would be answered as duplicates), then print the
-- summary (common.lua).
--   BENCH_HEADERS  header lines separated by "\n" ("Name: value")
--   BENCH_START    the first update_id (default 1)
local common = dofile(os.getenv("BENCH_LUA") .. "/common.lua")
local counter = tonumber(os.getenv("BENCH_START") or "1")
local headers = common.headers()
headers["Content-Type"] = headers["Content-Type"] or "application/json"
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

done = common.done
