-- authorization_code grant with PKCE (S256): each request redeems the next seeded code-<i> with
-- the verifier and the redirect URI; the answer carries an access token, an ID token and a
-- session-bound refresh token.
--   wrk ... -s bench/lua/code.lua http://127.0.0.1:PORT/token \
--       -- <base64 id:secret> <first i> <threads> <verifier> <urlencoded redirect_uri>
package.path = debug.getinfo(1, "S").source:match("^@(.*/)") .. "?.lua;" .. package.path
local bench = require("common")
local next_code, tail

function init(args)
   bench.form_post(args[1])
   next_code = bench.indices(tonumber(args[2]), tonumber(args[3] or "1"))
   tail = "&code_verifier=" .. args[4] .. "&redirect_uri=" .. args[5]
end

function request()
   local body = "grant_type=authorization_code&code=code-" .. next_code() .. tail
   return wrk.format(nil, nil, nil, body)
end

function response(status, headers, body)
   bench.check(status, status == 200 and bench.has(body, "access_token", '"')
      and bench.has(body, "token_type", '"Bearer"') and bench.has(body, "id_token", '"')
      and bench.has(body, "refresh_token", '"'))
end
