-- Shared by the wrk scripts here: at the end of a run, one line that
-- tests/bench/run reads (key=value, latencies in microseconds).
-- `graphql_errors` is counted by scripts that check response bodies.

local threads = {}

function setup(thread)
  table.insert(threads, thread)
  thread:set("thread_number", #threads)
end

function done(summary, latency, requests)
  local graphql_errors = 0
  for _, thread in ipairs(threads) do
    graphql_errors = graphql_errors + (thread:get("graphql_errors") or 0)
  end
  local e = summary.errors
  io.write(string.format(
    "wrk-result requests=%d duration_us=%d socket_errors=%d status_errors=%d graphql_errors=%d p50_us=%d p99_us=%d\n",
    summary.requests, summary.duration, e.connect + e.read + e.write + e.timeout, e.status,
    graphql_errors, latency:percentile(50), latency:percentile(99)))
end
