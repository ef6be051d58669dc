-- POST JSON bodies read from a file (one body per line), cycling through them.
--
--   wrk -t2 -c32 -d10s --latency -s bench/wrk/post_bodies.lua URL -- BODIES.jsonl [API_KEY]
--
-- A line "PATH<TAB>BODY" posts BODY to PATH instead of the URL's path (one customer per
-- line for the score-by-id benchmark); a line "GET PATH" gets PATH (next best actions).
--
-- With API_KEY, every request carries it in an X-API-Key header. Every request is formatted
-- once in init(), so the per-request Lua cost is one table lookup and is the same whichever
-- server is measured. done() prints one line starting with "WRK_JSON " that
-- bench/serve_bench.py parses (latencies in microseconds).

local threads_created = 0

function setup(thread)
  thread:set("thread_number", threads_created)
  threads_created = threads_created + 1
end

local requests = {}
local count = 0
local next_index = 0

function init(args)
  local path = args[1]
  if path == nil then
    error("usage: wrk ... -s post_bodies.lua URL -- BODIES.jsonl [API_KEY]")
  end
  local file = assert(io.open(path, "r"))
  local headers = { ["Content-Type"] = "application/json" }
  if args[2] ~= nil and #args[2] > 0 then
    headers["X-API-Key"] = args[2]
  end
  for line in file:lines() do
    if #line > 0 then
      count = count + 1
      local tab = string.find(line, "\t", 1, true)
      if string.sub(line, 1, 4) == "GET " then
        requests[count] = wrk.format("GET", string.sub(line, 5), headers)
      elseif tab then
        requests[count] = wrk.format(
          "POST", string.sub(line, 1, tab - 1), headers, string.sub(line, tab + 1))
      else
        requests[count] = wrk.format("POST", nil, headers, line)
      end
    end
  end
  file:close()
  if count == 0 then
    error("no request bodies in " .. path)
  end
  -- Threads start at different bodies so that they do not send the same customer in step.
  next_index = (thread_number * 7919) % count
end

function request()
  next_index = next_index % count + 1
  return requests[next_index]
end

function done(summary, latency, _)
  local errors = summary.errors
  io.write(string.format(
    'WRK_JSON {"duration_us":%d,"requests":%d,"bytes":%d,'
      .. '"errors":{"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d},'
      .. '"latency_us":{"mean":%.1f,"stdev":%.1f,"min":%d,"max":%d,'
      .. '"p50":%d,"p90":%d,"p99":%d,"p999":%d}}\n',
    summary.duration, summary.requests, summary.bytes,
    errors.connect, errors.read, errors.write, errors.status, errors.timeout,
    latency.mean, latency.stdev, latency.min, latency.max,
    latency:percentile(50), latency:percentile(90), latency:percentile(99),
    latency:percentile(99.9)
  ))
end
