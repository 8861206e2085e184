-- GET /api/v1/users/me with the bearer token in BENCH_TOKEN.
--   BENCH_TOKEN=... BENCH_LUA_DIR=bench/lua wrk -s bench/lua/me.lua http://127.0.0.1:P
local token = os.getenv("BENCH_TOKEN")
if token == nil or token == "" then
  error("BENCH_TOKEN is not set")
end
wrk.method = "GET"
wrk.path = "/api/v1/users/me"
wrk.headers["Authorization"] = "Bearer " .. token
wrk.headers["Accept"] = "application/json"

dofile((os.getenv("BENCH_LUA_DIR") or "bench/lua") .. "/report.lua")
