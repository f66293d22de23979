-- Introspection (RFC 7662) of one user access token by a resource server (client_secret_basic).
-- The token carries a sid, so every answer checks the deny list, the browser session, the
-- person and the client.
--   wrk ... -s bench/lua/introspect.lua http://127.0.0.1:PORT/introspect \
--       -- <base64 id:secret> <access token>
package.path = debug.getinfo(1, "S").source:match("^@(.*/)") .. "?.lua;" .. package.path
local bench = require("common")

function init(args)
   bench.form_post(args[1])
   wrk.body = "token=" .. args[2]
end

function response(status, headers, body)
   bench.check(status, status == 200 and bench.has(body, "active", "true"))
end
