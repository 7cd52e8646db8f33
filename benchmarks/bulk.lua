-- wrk script: POST /api/v1/links/lookup with {"discord_ids": [...]} of BENCH_BATCH random
-- seeded ids (as strings, like every id in the API). A few bodies are made up front and
-- taken in turn, so that wrk spends its time sending them rather than building them.
local links = tonumber(os.getenv("BENCH_LINKS"))
local batch = tonumber(os.getenv("BENCH_BATCH"))
local headers = {
  ["Authorization"] = "Bearer " .. os.getenv("BENCH_API_KEY"),
  ["Content-Type"] = "application/json",
}
local bodies = {}
local turn = 0
local threads = 0

function setup(thread)
  threads = threads + 1
  thread:set("thread_number", threads)
end

function init(args)
  math.randomseed(os.time() * 1000 + thread_number)
  for b = 1, 16 do
    local ids = {}
    for k = 1, batch do
      ids[k] = string.format('"1%017d"', math.random(1, links))
    end
    bodies[b] = '{"discord_ids":[' .. table.concat(ids, ",") .. "]}"
  end
end

function request()
  turn = turn % #bodies + 1
  return wrk.format("POST", "/api/v1/links/lookup", headers, bodies[turn])
end
