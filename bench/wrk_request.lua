-- wrk script for the shim benchmark.
-- Environment: BENCH_METHOD (POST|GET, default POST), BENCH_BODY_SIZE (bytes, default 64).
-- At the end it prints one machine-readable line, "BENCH_RESULT {json}", with exact latency
-- percentiles in microseconds (wrk's own --latency table is rounded to two decimals of its unit).

local method = os.getenv("BENCH_METHOD") or "POST"
local size = tonumber(os.getenv("BENCH_BODY_SIZE") or "64")

wrk.method = method
if method == "POST" or method == "PUT" then
   -- a fixed, printable JSON body of exactly `size` bytes
   local prefix = '{"input":"'
   local suffix = '"}'
   local fill = size - #prefix - #suffix
   if fill < 0 then fill = 0 end
   wrk.body = prefix .. string.rep("x", fill) .. suffix
   wrk.headers["Content-Type"] = "application/json"
end

function done(summary, latency, requests)
   local e = summary.errors
   io.write(string.format(
      'BENCH_RESULT {"requests":%d,"duration_us":%d,"bytes":%d,' ..
      '"errors":{"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d},' ..
      '"latency_us":{"min":%d,"mean":%.2f,"stdev":%.2f,"max":%d,' ..
      '"p50":%d,"p75":%d,"p90":%d,"p99":%d,"p99_9":%d}}\n',
      summary.requests, summary.duration, summary.bytes,
      e.connect, e.read, e.write, e.status, e.timeout,
      latency.min, latency.mean, latency.stdev, latency.max,
      latency:percentile(50), latency:percentile(75), latency:percentile(90),
      latency:percentile(99), latency:percentile(99.9)))
end
