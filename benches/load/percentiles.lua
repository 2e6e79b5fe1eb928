-- wrk script: prints more of the latency distribution than --latency
-- (p50 to p99.99, the longest, mean and standard deviation, in µs), for
-- tails that come from stalls (benches/README.md, "Fifteenth session"):
--   wrk -t1 -c50 -d5s -s benches/load/percentiles.lua http://127.0.0.1:PORT/small
done = function(summary, latency, requests)
  local s = ""
  for _, p in ipairs({50, 90, 95, 98, 99, 99.5, 99.9, 99.99}) do
    s = s .. string.format(" p%s=%.0f", p, latency:percentile(p))
  end
  io.write(string.format("latency (us):%s max=%d mean=%.0f sd=%.0f\n", s, latency.max, latency.mean, latency.stdev))
end
