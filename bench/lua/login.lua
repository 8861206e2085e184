-- POST /api/v1/auth/login with a JSON body, cycling through BENCH_LOGIN_USERS seeded users
-- named BENCH_LOGIN_PREFIX .. i .. BENCH_LOGIN_DOMAIN (i = 0 .. users-1), all with the
-- password BENCH_PASSWORD (hex, so it needs no JSON escaping). Each login creates a
-- session, a refresh token and an audit row, as in production.
local prefix = os.getenv("BENCH_LOGIN_PREFIX") or "bench-login-"
local domain = os.getenv("BENCH_LOGIN_DOMAIN") or "@example.com"
local users = tonumber(os.getenv("BENCH_LOGIN_USERS") or "1")
local password = os.getenv("BENCH_PASSWORD")
if password == nil or password == "" then
  error("BENCH_PASSWORD is not set")
end
local path = "/api/v1/auth/login"
local headers = { ["Content-Type"] = "application/json", ["Accept"] = "application/json" }

local thread_count = 0
function setup(thread)
  thread:set("thread_index", thread_count)
  thread_count = thread_count + 1
end

local counter = 0
function init(args)
  -- Threads start at different users, so they do not log the same user in at once.
  counter = (tonumber(thread_index) or 0) * 7919
end

function request()
  local i = counter % users
  counter = counter + 1
  local body = string.format('{"email": "%s%d%s", "password": "%s"}', prefix, i, domain, password)
  return wrk.format("POST", path, headers, body)
end

dofile((os.getenv("BENCH_LUA_DIR") or "bench/lua") .. "/report.lua")
