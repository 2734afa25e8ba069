-- wrk script that posts heartbeats to ingest (or to the no-op baseline app).
--
-- Usage:
--   wrk -s bench/wrk/heartbeats.lua URL -- single DEVICES PAYLOAD
--   wrk -s bench/wrk/heartbeats.lua URL -- batch DEVICES PAYLOAD BATCH_SIZE
--
-- single: one heartbeat per request, a JSON object.
-- batch:  BATCH_SIZE heartbeats per request, a JSON array.
-- DEVICES: device ids cycle through bench-0000000 .. DEVICES - 1.
-- PAYLOAD: "basic" sends device_id, seq and ts (device time in seconds);
--          "full" adds interval_s and a small attrs object.
--
-- Each thread builds its requests once, in init, and then sends them in a
-- loop, so wrk spends no time on building bodies while it measures. At the
-- end, done() prints one line "WRK_JSON {...}" with the counts and latency
-- percentiles (in microseconds) for the runner to read.

local PREBUILT_SINGLE = 8192
local PREBUILT_BATCH = 32

local thread_count = 0
local requests = {}
local next_request = 1

function setup(thread)
  thread:set("thread_index", thread_count)
  thread_count = thread_count + 1
end

local function heartbeat(device_index, seq, payload, ts)
  local body = string.format(
    '{"device_id":"bench-%07d","seq":%d,"ts":%d', device_index, seq, ts)
  if payload == "full" then
    body = body .. ',"interval_s":10,"attrs":{"fw":"2.4.1","battery_pct":87}'
  end
  return body .. "}"
end

function init(args)
  local mode = args[1] or "single"
  local devices = tonumber(args[2] or "100000")
  local payload = args[3] or "basic"
  local batch_size = tonumber(args[4] or "1000")
  local ts = os.time()
  local headers = { ["Content-Type"] = "application/json" }
  local index = (thread_index or 0) * 1000003
  if mode == "single" then
    for i = 1, PREBUILT_SINGLE do
      local body = heartbeat(index % devices, i, payload, ts)
      requests[i] = wrk.format("POST", nil, headers, body)
      index = index + 1
    end
  elseif mode == "batch" then
    for i = 1, PREBUILT_BATCH do
      local items = {}
      for j = 1, batch_size do
        items[j] = heartbeat(index % devices, i, payload, ts)
        index = index + 1
      end
      local body = "[" .. table.concat(items, ",") .. "]"
      requests[i] = wrk.format("POST", nil, headers, body)
    end
  else
    error("unknown mode " .. mode .. "; use single or batch")
  end
end

function request()
  local req = requests[next_request]
  next_request = next_request % #requests + 1
  return req
end

function done(summary, latency, _)
  local e = summary.errors
  io.write(string.format(
    'WRK_JSON {"duration_us":%d,"requests":%d,"bytes":%d,'
      .. '"errors":{"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d},'
      .. '"latency_us":{"mean":%.1f,"max":%d,"p50":%d,"p90":%d,"p99":%d,"p99_9":%d}}\n',
    summary.duration, summary.requests, summary.bytes,
    e.connect, e.read, e.write, e.status, e.timeout,
    latency.mean, latency.max, latency:percentile(50), latency:percentile(90),
    latency:percentile(99), latency:percentile(99.9)))
end
