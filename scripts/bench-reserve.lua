-- wrk script of scripts/bench: POST /reserve, rotating pre-minted user tokens.
--
-- Environment:
--   BENCH_TOKENS      file with one user JWT per line (required); a line may carry the
--                     user's waiting-room pass after a tab, sent as Queue-Pass
--   BENCH_CATEGORIES  comma-separated category ids; token i reserves from category i mod n
--   BENCH_QUANTITY    tickets per reserve (default 1)
--   BENCH_ADJACENT    when set, every reserve asks for the best adjacent seats (`"adjacent": true`,
--                     seated categories)
--   BENCH_DELAY_MS    when set, each connection waits this long before each request, so
--                     connections x 1000 / (delay + latency) fixes the offered rate
--                     (a paced closed loop; wrk has no open-loop mode, see docs/benchmarks.md)
local dir = debug.getinfo(1, "S").source:match("^@(.*/)") or "./"
dofile(dir .. "bench-report.lua")

local requests = {}
local index = 0

local function split_ids(text)
  local ids = {}
  for id in string.gmatch(text or "", "%d+") do
    ids[#ids + 1] = id
  end
  return ids
end

function init(args)
  local tokens_file = assert(os.getenv("BENCH_TOKENS"), "BENCH_TOKENS is required")
  local categories = split_ids(os.getenv("BENCH_CATEGORIES"))
  assert(#categories > 0, "BENCH_CATEGORIES is required")
  local quantity = tonumber(os.getenv("BENCH_QUANTITY") or "1")
  local adjacent = os.getenv("BENCH_ADJACENT") and ',"adjacent":true' or ""
  local line_number = 0
  for line in io.lines(tokens_file) do
    if line ~= "" then
      local token, pass = line:match("^([^\t]+)\t?(.*)$")
      local category = categories[(line_number % #categories) + 1]
      local body = string.format('{"category_id":%s,"quantity":%d%s}', category, quantity, adjacent)
      local headers = {
        ["Authorization"] = "Bearer " .. token,
        ["Content-Type"] = "application/json",
      }
      if pass ~= "" then
        headers["Queue-Pass"] = pass
      end
      requests[#requests + 1] = wrk.format("POST", "/reserve", headers, body)
      line_number = line_number + 1
    end
  end
  assert(#requests > 0, "no tokens in " .. tokens_file)
  -- Threads start at different users.
  index = math.random(#requests)
end

function request()
  index = index % #requests + 1
  return requests[index]
end

local delay_ms = tonumber(os.getenv("BENCH_DELAY_MS") or "")
if delay_ms and delay_ms > 0 then
  function delay()
    return delay_ms
  end
end
