-- wrk script for `make bench` (tests/bench/bench.py): one token per request, a count of every
-- response status, an optional pacer, and the run's numbers written as JSON.
--
-- Environment, read in every Lua state wrk creates:
--   BENCH_TOKEN        one token, sent on every request (a static request: no per-request Lua)
--   BENCH_TOKEN_FILE   tokens, one per line; request i carries token i mod n (requests are
--                      built in init(), so request() is a table lookup)
--   BENCH_ONE_PASS     with BENCH_TOKEN_FILE, a file name: once every token has been sent,
--                      stop sending and create that file (wrk itself runs until -d is over
--                      or it gets SIGINT, which bench.py sends when the file appears)
--   BENCH_RATE         requests per second for the whole run; unset or 0: closed loop
--   BENCH_PATH         request path (default /api/orders)
--   BENCH_RESULT_FILE  where done() writes the results (one JSON object)
--   BENCH_QUANTILES    set: the results include 2000 evenly spaced latency quantiles
--   BENCH_HEADERS      more request headers, `name=value` separated by `;` (unitcost.py)
--
-- The results include `active_us`, from the thread's start (its first request, with a token
-- file) to its last response: unlike wrk's own duration, it does not count the time a stopped
-- thread waits for the run to end.
--
-- The pacer (BENCH_RATE) is what this wrk can do instead of wrk2, which Debian does not
-- package. Before each request, delay() reserves the next send slot on one schedule shared
-- by the thread's connections (a slot every 1/rate s) and waits for it. This approximates an
-- open-loop client at a constant rate as long as the server keeps up (latency well under
-- connections/rate), with two differences: wrk's timers have 1 ms resolution, so the requests
-- due within a millisecond leave together (about rate/1000 of them, at most one per idle
-- connection), which adds their queueing to the latency; and a connection still waiting for
-- its response cannot send, and latency is timed from the actual send, not from the slot (no
-- coordinated-omission correction, unlike wrk2). The JSON has the rate achieved.

-- An empty variable counts as unset.
local function env(name)
  local value = os.getenv(name)
  if value == "" then
    return nil
  end
  return value
end

local ffi = require("ffi")
ffi.cdef [[
  typedef struct { long tv_sec; long tv_nsec; } bench_timespec;
  int clock_gettime(int clock_id, bench_timespec *tp);
]]
local CLOCK_MONOTONIC = 1
local timespec = ffi.new("bench_timespec")

local function now_ms()
  ffi.C.clock_gettime(CLOCK_MONOTONIC, timespec)
  return tonumber(timespec.tv_sec) * 1000 + tonumber(timespec.tv_nsec) / 1e6
end

local path = env("BENCH_PATH") or "/api/orders"
local token = env("BENCH_TOKEN")
local token_file = env("BENCH_TOKEN_FILE")
local pass_file = env("BENCH_ONE_PASS")
local rate = tonumber(env("BENCH_RATE") or "0") or 0

wrk.path = path
if token then
  wrk.headers["Authorization"] = "Bearer " .. token
end
for name, value in string.gmatch(env("BENCH_HEADERS") or "", "([^=;]+)=([^;]*)") do
  wrk.headers[name] = value
end

-- Per thread: requests sent, responses by status, when it started and last got a response.
sent = 0
statuses = {}
first_ms = nil
last_ms = nil

local requests = {}
local thread_self = nil

function init(args)
  thread_self = wrk.thread
  if not token_file then
    first_ms = now_ms() -- static requests: the connections open right after init()
    return
  end
  local n = 0
  for line in io.lines(token_file) do
    if line ~= "" then
      n = n + 1
      requests[n] = wrk.format("GET", path, { ["Authorization"] = "Bearer " .. line })
    end
  end
  if n == 0 then
    error("no tokens in " .. token_file)
  end
end

if token_file then
  function request()
    local n = #requests
    if pass_file and sent == n then
      assert(io.open(pass_file, "w")):close()
      thread_self:stop()
    end
    if sent == 0 then
      first_ms = now_ms()
    end
    sent = sent + 1
    return requests[(sent - 1) % n + 1]
  end
end

function response(status, headers, body)
  statuses[status] = (statuses[status] or 0) + 1
  last_ms = now_ms()
end

if rate > 0 then
  local CATCH_UP_MS = 10
  local interval_ms = 1000 / rate
  local next_slot = nil

  function delay()
    local t = now_ms()
    -- Slots missed by up to CATCH_UP_MS (all connections were busy) are still used, so the
    -- rate holds; older ones are given up rather than sent as one large burst.
    local slot = math.max(next_slot or t, t - CATCH_UP_MS)
    next_slot = slot + interval_ms
    return math.max(0, math.floor(slot - t + 0.5))
  end
end

local threads = {}

function setup(thread)
  table.insert(threads, thread)
end

-- Enough JSON for tables of numbers and strings (a table with [1] is an array).
local function json(value)
  if type(value) == "table" and value[1] ~= nil then
    local parts = {}
    for _, v in ipairs(value) do
      parts[#parts + 1] = json(v)
    end
    return "[" .. table.concat(parts, ",") .. "]"
  elseif type(value) == "table" then
    local parts = {}
    for k, v in pairs(value) do
      table.insert(parts, string.format("%q:%s", tostring(k), json(v)))
    end
    return "{" .. table.concat(parts, ",") .. "}"
  elseif type(value) == "string" then
    return string.format("%q", value)
  elseif value ~= value or value == math.huge or value == -math.huge then
    return "null"
  end
  return string.format("%.17g", value)
end

function done(summary, latency, _requests)
  local total = { sent = 0, statuses = {} }
  local first, last = math.huge, -math.huge
  for _, thread in ipairs(threads) do
    total.sent = total.sent + thread:get("sent")
    for status, count in pairs(thread:get("statuses")) do
      total.statuses[status] = (total.statuses[status] or 0) + count
    end
    first = math.min(first, thread:get("first_ms") or math.huge)
    last = math.max(last, thread:get("last_ms") or -math.huge)
  end
  local result = {
    duration_us = summary.duration,
    active_us = (last - first) * 1000,
    requests = summary.requests,
    sent = total.sent,
    statuses = total.statuses,
    errors = summary.errors,
    latency_us = {
      mean = latency.mean,
      max = latency.max,
      p50 = latency:percentile(50),
      p90 = latency:percentile(90),
      p99 = latency:percentile(99),
      p999 = latency:percentile(99.9),
    },
  }
  if env("BENCH_QUANTILES") then
    -- The latency distribution as 2000 evenly spaced quantiles, so that runs can be pooled
    -- (this wrk's Lua cannot index the histogram itself).
    local quantiles, n = {}, 2000
    for i = 1, n do
      quantiles[i] = latency:percentile((i - 0.5) * 100 / n)
    end
    result.quantiles = quantiles
  end
  local out = env("BENCH_RESULT_FILE")
  if out then
    local f = assert(io.open(out, "w"))
    f:write(json(result), "\n")
    f:close()
  else
    print(json(result))
  end
end
