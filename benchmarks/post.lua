-- wrk script for `make bench`: POST one OIP JSON body, report one parseable line in done().
-- The body comes from the file named by the BODY_FILE environment variable; the path comes
-- from the URL given to wrk. CONTENT_TYPE (default application/json), ACCEPT and
-- TARGET_MODEL (sent as X-Amzn-SageMaker-Target-Model) are optional.

local path = os.getenv("BODY_FILE")
if path == nil then
  error("set BODY_FILE to the request body file")
end
local file = assert(io.open(path, "rb"))
wrk.method = "POST"
wrk.body = file:read("*a")
file:close()
wrk.headers["Content-Type"] = os.getenv("CONTENT_TYPE") or "application/json"
if os.getenv("ACCEPT") then
  wrk.headers["Accept"] = os.getenv("ACCEPT")
end
if os.getenv("TARGET_MODEL") then
  wrk.headers["X-Amzn-SageMaker-Target-Model"] = os.getenv("TARGET_MODEL")
end

function done(summary, latency, requests)
  local seconds = summary.duration / 1e6
  local e = summary.errors
  -- Latency percentiles are in microseconds; non2xx counts every status outside 200-399
  -- (what wrk prints as "Non-2xx or 3xx responses").
  io.write(string.format(
    'BENCH {"requests": %d, "rps": %.2f, "p50_us": %d, "p99_us": %d, "non2xx": %d, '
      .. '"socket_errors": %d, "timeouts": %d}\n',
    summary.requests, summary.requests / seconds,
    latency:percentile(50), latency:percentile(99), e.status,
    e.connect + e.read + e.write, e.timeout))
end
