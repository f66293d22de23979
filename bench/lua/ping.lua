-- GET /ping: a bare Django view through the whole middleware stack; the floor the other
-- scenarios are compared with.
--   wrk -t1 -c8 -d10s --latency -s bench/lua/ping.lua http://127.0.0.1:PORT/ping
package.path = debug.getinfo(1, "S").source:match("^@(.*/)") .. "?.lua;" .. package.path
local bench = require("common")

function init(args)
   wrk.method = "GET"
end

function response(status, headers, body)
   bench.check(status, status == 200 and body == "pong")
end
