-- Shared by the bench scripts: wrk calls done() once at the end of a run; it prints one
-- line, "BENCH_RESULT {json}", that bench/benchtool.py parses. Latencies in milliseconds.
-- non2xx is wrk's summary.errors.status (responses with a status above 399);
-- socket_errors is connect + read + write + timeout.
function done(summary, latency, requests)
  local e = summary.errors
  local socket_errors = e.connect + e.read + e.write + e.timeout
  local seconds = summary.duration / 1e6
  io.write(string.format(
    'BENCH_RESULT {"requests": %d, "duration_s": %.6f, "rps": %.3f, "bytes": %d, '
      .. '"p50_ms": %.3f, "p90_ms": %.3f, "p99_ms": %.3f, "p999_ms": %.3f, '
      .. '"mean_ms": %.3f, "max_ms": %.3f, "non2xx": %d, "socket_errors": %d, '
      .. '"connect_errors": %d, "read_errors": %d, "write_errors": %d, "timeouts": %d}\n',
    summary.requests, seconds, summary.requests / seconds, summary.bytes,
    latency:percentile(50) / 1000, latency:percentile(90) / 1000,
    latency:percentile(99) / 1000, latency:percentile(99.9) / 1000,
    latency.mean / 1000, latency.max / 1000, e.status, socket_errors,
    e.connect, e.read, e.write, e.timeout))
end
