-- wrk script: POST /v1/events/ingest with BENCH_BATCH events per request.
--
-- Every event gets a unique idempotencyKey (run prefix, wrk thread, counter),
-- so that none is a duplicate; customerRef cycles over BENCH_CUSTOMERS
-- customers (cust-0 ..); ts is "now" (UTC, current period) unless BENCH_TS
-- fixes it (late events). With BENCH_PARSE=1 the "accepted" count of every
-- 200 response is summed (costs wrk CPU: use it for batches, not single events).
-- done() prints one line "WRKJSON {...}" that the Python side parses.

local key = os.getenv("BENCH_KEY")
local metric = os.getenv("BENCH_METRIC") or "api_calls"
local prefix = os.getenv("BENCH_PREFIX") or "run"
local customers = tonumber(os.getenv("BENCH_CUSTOMERS") or "10")
local batch = tonumber(os.getenv("BENCH_BATCH") or "1")
local fixed_ts = os.getenv("BENCH_TS")
local parse = os.getenv("BENCH_PARSE") == "1"

local threads = {}
local counter = 0

function setup(thread)
  table.insert(threads, thread)
  thread:set("tid", #threads)
end

function init(args)
  accepted = 0
  wrk.method = "POST"
  wrk.path = "/v1/events/ingest"
  wrk.headers["Content-Type"] = "application/json"
  wrk.headers["Authorization"] = "Bearer " .. key
end

function request()
  local ts = fixed_ts or os.date("!%Y-%m-%dT%H:%M:%SZ")
  local parts = {}
  for i = 1, batch do
    counter = counter + 1
    parts[i] = string.format(
      '{"metric":"%s","customerRef":"cust-%d","quantity":1,"ts":"%s","idempotencyKey":"%s-%d-%d"}',
      metric, counter % customers, ts, prefix, tid, counter)
  end
  return wrk.format(nil, nil, nil, '{"events":[' .. table.concat(parts, ",") .. ']}')
end

if parse then
  function response(status, headers, body)
    if status == 200 then
      accepted = accepted + tonumber(body:match('"accepted":(%d+)') or "0")
    end
  end
end

function done(summary, latency, requests)
  local total_accepted = 0
  for _, thread in ipairs(threads) do
    total_accepted = total_accepted + (thread:get("accepted") or 0)
  end
  if not parse then total_accepted = -1 end
  local e = summary.errors
  io.write(string.format(
    'WRKJSON {"requests":%d,"duration_us":%d,"bytes":%d,' ..
    '"errors":{"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d},' ..
    '"latency_us":{"min":%d,"mean":%.1f,"max":%d,"p50":%d,"p90":%d,"p95":%d,"p99":%d,"p99.9":%d},' ..
    '"accepted":%d}\n',
    summary.requests, summary.duration, summary.bytes,
    e.connect, e.read, e.write, e.status, e.timeout,
    latency.min, latency.mean, latency.max,
    latency:percentile(50), latency:percentile(90), latency:percentile(95),
    latency:percentile(99), latency:percentile(99.9),
    total_accepted))
end
