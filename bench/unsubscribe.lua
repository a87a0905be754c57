-- wrk script for bench/unsubscribe.py: POST a one-click form to each path of a file, once.
--
--   wrk -t T -c C -d BACKSTOP --latency -s bench/unsubscribe.lua URL -- PATHS T SECONDS DONE
--
-- PATHS holds one path per line. Thread k of T takes lines k, k+T, k+2T, ..., so no path
-- is requested twice. A connection stops asking once its thread's paths are used up or
-- SECONDS have passed (monotonic clock); the thread stops when every request it sent has
-- been answered, so nothing is left in flight and the server's writes can be counted
-- against the answers. A stopped thread creates the file DONE<k>; the last one sends wrk
-- SIGINT, which wakes wrk's main thread (it sleeps for -d whatever the threads do) to
-- report at once, so the measured time ends with the last answer. -d is only a backstop.
-- done() prints one line, BENCH_JSON {...}.
--
-- wrk calls delay() before every request a connection sends, so delay() decides whether one
-- more is sent (and counts it); request() then takes the next unused path. wrk also calls
-- request() once by itself, to check what it returns, before any connection opens: that
-- call gets the first path without using it up.

local ffi_ok, ffi = pcall(require, "ffi")
local now
if ffi_ok then
  ffi.cdef([[
    typedef struct { long tv_sec; long tv_nsec; } bench_timespec;
    int clock_gettime(int clk_id, bench_timespec *tp);
    int getpid(void);
    int kill(int pid, int sig);
  ]])
  local ts = ffi.new("bench_timespec")
  now = function()
    ffi.C.clock_gettime(1, ts) -- CLOCK_MONOTONIC
    return tonumber(ts.tv_sec) + tonumber(ts.tv_nsec) * 1e-9
  end
else
  now = os.time -- whole seconds: the run may be up to a second short
end

local threads = {}

function setup(thread)
  thread:set("id", #threads)
  table.insert(threads, thread)
end

function init(args)
  local file, seconds = args[1], tonumber(args[3])
  nthreads, done_prefix = tonumber(args[2]), args[4]
  paths = {}
  local i = 0
  for line in io.lines(file) do
    if i % nthreads == id and line ~= "" then
      paths[#paths + 1] = line
    end
    i = i + 1
  end
  deadline = now() + seconds
  issued, taken, ok, bad, finished, stopped = 0, 0, 0, 0, false, false
  first_bad = ""
  wrk.method = "POST"
  wrk.body = "List-Unsubscribe=One-Click"
  wrk.headers["Content-Type"] = "application/x-www-form-urlencoded"
end

local function exists(path)
  local f = io.open(path, "r")
  if f then
    f:close()
  end
  return f ~= nil
end

local function maybe_stop()
  if stopped or not finished or ok + bad ~= issued then
    return
  end
  stopped = true
  wrk.thread:stop()
  io.open(done_prefix .. id, "w"):close()
  for k = 0, nthreads - 1 do
    if not exists(done_prefix .. k) then
      return -- a thread still running will do it (each marks itself before looking)
    end
  end
  if ffi_ok then
    ffi.C.kill(ffi.C.getpid(), 2) -- else bench/unsubscribe.py sends it on seeing the files
  end
end

-- Called before each request of a connection: 0 to go on, or a long wait to fall idle.
function delay()
  if not finished and issued < #paths and now() < deadline then
    issued = issued + 1
    return 0
  end
  finished = true
  maybe_stop()
  return 3600000
end

function request()
  if issued == 0 then
    return wrk.format(nil, paths[1] or "/") -- wrk's own check, not sent
  end
  taken = taken + 1
  return wrk.format(nil, paths[taken])
end

function response(status, headers, body)
  if status >= 200 and status < 300 then
    ok = ok + 1
  else
    bad = bad + 1
    if first_bad == "" then
      first_bad = status .. " " .. string.sub(body or "", 1, 300)
    end
  end
  maybe_stop()
end

local function json_string(s)
  return '"' .. string.gsub(s, '[%c"\\]', function(c)
    return string.format("\\u%04x", string.byte(c))
  end) .. '"'
end

function done(summary, latency, requests)
  local issued_all, ok_all, bad_all, first = 0, 0, 0, ""
  for _, thread in ipairs(threads) do
    issued_all = issued_all + thread:get("issued")
    ok_all = ok_all + thread:get("ok")
    bad_all = bad_all + thread:get("bad")
    if first == "" then
      first = thread:get("first_bad")
    end
  end
  local e = summary.errors
  local parts = {
    string.format('"duration_us": %d', summary.duration),
    string.format('"responses": %d', summary.requests),
    string.format('"bytes": %d', summary.bytes),
    string.format('"issued": %d', issued_all),
    string.format('"ok": %d', ok_all),
    string.format('"non_2xx": %d', bad_all),
    string.format('"first_non_2xx": %s', json_string(first)),
    string.format(
      '"socket_errors": {"connect": %d, "read": %d, "write": %d, "timeout": %d}',
      e.connect, e.read, e.write, e.timeout
    ),
    string.format('"latency_us": {"min": %d, "mean": %.1f, "max": %d, "p50": %d, "p90": %d, '
      .. '"p99": %d, "p99_9": %d}', latency.min, latency.mean, latency.max,
      latency:percentile(50), latency:percentile(90), latency:percentile(99),
      latency:percentile(99.9)),
  }
  io.write("BENCH_JSON {" .. table.concat(parts, ", ") .. "}\n")
end
