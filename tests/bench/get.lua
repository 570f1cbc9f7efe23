-- wrk script: a plain GET of the URL given to wrk, with no per-response
-- Lua (the ceiling and /healthz: wrk must stay far faster than the server).

local here = debug.getinfo(1, "S").source:match("^@(.*/)") or "./"
dofile(here .. "report.lua")
