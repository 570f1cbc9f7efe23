-- wrk script: POSTs one GraphQL operation with a bearer token.
-- BODY is the JSON body; with FRESH_USERS=1, "{user}" in it becomes a new
-- user id on every request (first accesses, each creating a state).
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer " .. os.getenv("TOKEN")
local body = os.getenv("BODY")
local fresh = os.getenv("FRESH_USERS") == "1"
local thread_id = 0
local counter = 0

setup = function(thread)
  thread_id = thread_id + 1
  thread:set("prefix", "bench-" .. thread_id .. "-" .. os.time() .. "-")
end

request = function()
  if not fresh then
    return wrk.format(nil, nil, nil, body)
  end
  counter = counter + 1
  return wrk.format(nil, nil, nil, (body:gsub("{user}", prefix .. counter)))
end

done = function(summary, latency, requests)
  io.write(string.format("  %d requests, %d errors (non-2xx: %d), %.0f req/s, p50 %.2f ms, p99 %.2f ms\n",
    summary.requests, summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout,
    summary.errors.status, summary.requests / (summary.duration / 1e6),
    latency:percentile(50) / 1000, latency:percentile(99) / 1000))
end
