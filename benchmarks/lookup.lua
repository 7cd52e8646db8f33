-- wrk script: GET /api/v1/links/{discord_id} for random seeded Discord ids.
-- The seeded ids are 10^17 + 1 .. 10^17 + BENCH_LINKS (built as text: Lua numbers are doubles).
local links = tonumber(os.getenv("BENCH_LINKS"))
local headers = { ["Authorization"] = "Bearer " .. os.getenv("BENCH_API_KEY") }
local threads = 0

function setup(thread)
  threads = threads + 1
  thread:set("thread_number", threads)
end

function init(args)
  math.randomseed(os.time() * 1000 + thread_number)
end

function request()
  local path = string.format("/api/v1/links/1%017d", math.random(1, links))
  return wrk.format("GET", path, headers)
end
