-- wrk script for the "buffering" part of benches/load/run.sh: every request
-- is a POST of BODY_BYTES bytes (with a Content-Length; wrk adds it).
local n = tonumber(os.getenv("BODY_BYTES") or "16")
wrk.method = "POST"
wrk.body = string.rep("x", n)
wrk.headers["Content-Type"] = "application/octet-stream"
