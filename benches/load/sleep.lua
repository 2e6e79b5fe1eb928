-- /sleep?ms=N: sleep N milliseconds (default 20, at most 10000), then answer
-- with the node's name. Used by benches/load/run.sh on the Apache nodes.
function handle(r)
    local args = r:parseargs()
    local ms = tonumber(args["ms"] or "20") or 20
    if ms < 0 then ms = 0 end
    if ms > 10000 then ms = 10000 end
    if ms > 0 then r.usleep(math.floor(ms * 1000)) end
    r.content_type = "text/plain"
    r:puts("node " .. (r.subprocess_env["NODE_NAME"] or r.server_name) .. " slept " .. ms .. " ms\n")
    return apache2.OK
end
