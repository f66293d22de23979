-- client_credentials grant (RFC 6749 §4.4) with client_secret_basic; no row is written.
--   wrk ... -s bench/lua/client_credentials.lua http://127.0.0.1:PORT/token \
--       -- <base64 id:secret> <scope>
package.path = debug.getinfo(1, "S").source:match("^@(.*/)") .. "?.lua;" .. package.path
local bench = require("common")

function init(args)
   bench.form_post(args[1])
   wrk.body = "grant_type=client_credentials&scope=" .. (args[2] or "")
end

function response(status, headers, body)
   bench.check(status, status == 200 and bench.has(body, "access_token", '"')
      and bench.has(body, "token_type", '"Bearer"'))
end
