-- wrk script of scripts/bench step 1: GET /health (the URL given to wrk), with the
-- machine-readable report of bench-report.lua.
local dir = debug.getinfo(1, "S").source:match("^@(.*/)") or "./"
dofile(dir .. "bench-report.lua")
