-- wrk script: sends pre-signed Slack requests from a pool file, each one once.
--
-- wrk -s pool.lua URL -- POOL_FILE THREADS
--
-- POOL_FILE has one request a line: "<timestamp>\t<signature>\t<content type>\t<body>".
-- Thread n of THREADS sends lines n, n+THREADS, n+2*THREADS ... so no request goes out twice;
-- a thread that runs out starts over and counts it ("wrapped"), which makes a run invalid (the
-- bot's duplicate filter drops repeats). To pace each connection, the harness appends
-- "function delay() return MS end" to a copy of this script (wrk's latency excludes the delay).

local threads = {}
local counter = 1

function setup(thread)
  thread:set("id", #threads)
  table.insert(threads, thread)
end

function init(args)
  local path = args[1]
  local nthreads = tonumber(args[2])
  wrapped = 0
  pool = {}
  local index = 0
  for line in io.lines(path) do
    if index % nthreads == id then
      local stamp, signature, kind, body = line:match("^([^\t]*)\t([^\t]*)\t([^\t]*)\t(.*)$")
      local headers = {
        ["Content-Type"] = kind,
        ["X-Slack-Request-Timestamp"] = stamp,
        ["X-Slack-Signature"] = signature,
        ["User-Agent"] = "Slackbot 1.0 (+https://api.slack.com/robots)",
      }
      pool[#pool + 1] = wrk.format("POST", nil, headers, body)
    end
    index = index + 1
  end
end

function request()
  if counter > #pool then
    counter = 1
    wrapped = wrapped + 1
  end
  local prepared = pool[counter]
  counter = counter + 1
  return prepared
end

function done(summary, latency, requests)
  local wraps = 0
  for _, thread in ipairs(threads) do
    wraps = wraps + (thread:get("wrapped") or 0)
  end
  local e = summary.errors
  io.write(string.format(
    'WRK_JSON {"requests":%d,"duration_us":%d,"bytes":%d,"connect":%d,"read":%d,' ..
    '"write":%d,"status":%d,"timeout":%d,"p50_us":%d,"p90_us":%d,"p99_us":%d,' ..
    '"max_us":%d,"mean_us":%f,"wrapped":%d}\n',
    summary.requests, summary.duration, summary.bytes, e.connect, e.read, e.write,
    e.status, e.timeout, latency:percentile(50), latency:percentile(90),
    latency:percentile(99), latency.max, latency.mean, wraps))
end
