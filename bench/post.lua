-- wrk script: POST one fixed body with fixed headers, then print the summary (common.lua).
--   BENCH_BODY     path of the body file (sent byte for byte)
--   BENCH_HEADERS  header lines separated by "\n" ("Name: value")
local common = dofile(os.getenv("BENCH_LUA") .. "/common.lua")
local f = assert(io.open(os.getenv("BENCH_BODY"), "rb"))
wrk.method = "POST"
wrk.body = f:read("*a")
f:close()
wrk.headers["Content-Type"] = "application/json"
for name, value in pairs(common.headers()) do
  wrk.headers[name] = value
end

done = common.done
