-- wrk script: POSTs one GraphQL operation (BODY, a JSON request) and counts
-- 200 responses that carry GraphQL errors, which wrk alone would not see.
--
-- The bearer token: TOKEN (one for every request), or TOKENS (a file with
-- one a line, taken round robin, a request each), or neither (no token).
-- "{id}" in BODY becomes a new id on every request: ID_PREFIX (new for each
-- wrk run), the thread's number and a counter, so no id is ever seen twice.
-- "{step}" in BODY becomes each of STEPS (comma-separated) in turn, one per
-- round over the tokens: every token's first request has the first step,
-- its second the second, and back to the first after the last.

local here = debug.getinfo(1, "S").source:match("^@(.*/)") or "./"
dofile(here .. "report.lua")

local body = assert(os.getenv("BODY"), "set BODY")
local fresh_ids = body:find("{id}", 1, true) ~= nil
local requests = {} -- one ready-made request per token (and step)
local next_request = 0
local counter = 0
local prefix, token
graphql_errors = 0

local function format(token, text)
  local headers = { ["Content-Type"] = "application/json" }
  if token then headers["Authorization"] = "Bearer " .. token end
  return wrk.format("POST", nil, headers, text)
end

function init(args)
  local tokens = {}
  local file = os.getenv("TOKENS")
  if file then
    for line in io.lines(file) do table.insert(tokens, line) end
  else
    tokens[1] = os.getenv("TOKEN") -- nil: no token
  end
  local texts = { body }
  if body:find("{step}", 1, true) then
    texts = {}
    for step in assert(os.getenv("STEPS"), "set STEPS"):gmatch("[^,]+") do
      table.insert(texts, (body:gsub("{step}", function() return step end)))
    end
  end
  for _, text in ipairs(texts) do
    for i = 1, math.max(#tokens, 1) do
      table.insert(requests, format(tokens[i], text))
    end
  end
  prefix = (os.getenv("ID_PREFIX") or "bench") .. "-" .. thread_number .. "-"
  token = tokens[1]
end

function request()
  if fresh_ids then
    counter = counter + 1
    return format(token, (body:gsub("{id}", prefix .. counter)))
  end
  next_request = next_request % #requests + 1
  return requests[next_request]
end

function response(status, headers, body)
  -- Any GraphQL error is a top-level "errors" member; data never holds the word.
  if status == 200 and body:find('"errors"', 1, true) then
    graphql_errors = graphql_errors + 1
  end
end
