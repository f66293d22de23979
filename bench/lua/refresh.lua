-- refresh_token grant with rotation: each request presents the next seeded token rt-<i>, each
-- used once (bound to a live browser session, so the session check runs too). The seeded
-- grants have openid, so every answer carries a new ID token (OIDC Core §12.2).
--   wrk ... -s bench/lua/refresh.lua http://127.0.0.1:PORT/token \
--       -- <base64 id:secret> <first i> <threads>
package.path = debug.getinfo(1, "S").source:match("^@(.*/)") .. "?.lua;" .. package.path
local bench = require("common")
local next_token

function init(args)
   bench.form_post(args[1])
   next_token = bench.indices(tonumber(args[2]), tonumber(args[3] or "1"))
end

function request()
   return wrk.format(nil, nil, nil, "grant_type=refresh_token&refresh_token=rt-" .. next_token())
end

function response(status, headers, body)
   bench.check(status, status == 200 and bench.has(body, "access_token", '"')
      and bench.has(body, "token_type", '"Bearer"') and bench.has(body, "refresh_token", '"')
      and bench.has(body, "id_token", '"'))
end
