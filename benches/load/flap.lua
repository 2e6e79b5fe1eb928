-- wrk script for the "flap" scenario of benches/load/run.sh: every request
-- holds an Apache worker; about 1 in CLOSE_EVERY requests asks the node to
-- close the connection afterwards, so wrk reconnects and the node has a
-- worker free for a moment now and then (its status page answers only
-- sometimes).
local every = tonumber(os.getenv("CLOSE_EVERY") or "20")
local n = 0
request = function()
    n = n + 1
    if n % every == 0 then
        return wrk.format(nil, nil, { ["Connection"] = "close" })
    end
    return wrk.format()
end
