-- wrk script for the peer benchmark: POSTs JSON-RPC 2.0 echo calls whose
-- first argument cycles through KEYS values ("k0" … "k63" by default), so
-- that mserve's routing strings (the first argument) spread over servants,
-- and prints one machine-readable line when the run is done.
--
--   wrk -t2 -c64 -d5s -s post.lua http://127.0.0.1:7200/ -- 64
--
-- The requests are formatted once, in init, so that the script costs wrk the
-- same little per request whatever the target.
local keys = 64
local reqs = {}
local n = 0

function init(args)
  if args[1] then keys = tonumber(args[1]) end
  local headers = { ["Content-Type"] = "application/json" }
  for i = 0, keys - 1 do
    local body = string.format('{"jsonrpc":"2.0","id":%d,"method":"echo","params":["k%d"]}', i + 1, i)
    reqs[i + 1] = wrk.format("POST", nil, headers, body)
  end
  -- start each thread at a different place in the cycle
  n = math.random(0, keys - 1)
end

function request()
  n = n + 1
  return reqs[(n % keys) + 1]
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    "WRKRESULT requests=%d duration_us=%d errors=%d p50_us=%d p90_us=%d p99_us=%d max_us=%d\n",
    summary.requests, summary.duration, e.connect + e.read + e.write + e.status + e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max))
end
