-- refresh_token grant of a public client with DPoP (RFC 9449 §5): each request presents the next
-- seeded token drt-<i> (bound to the bench's DPoP key) and the proof signed for it, line i of
-- the proofs file (each proof single use, like each token).
--   wrk ... -s bench/lua/dpop_refresh.lua http://127.0.0.1:PORT/token \
--       -- <client_id> <first i> <threads> <proofs file>
package.path = debug.getinfo(1, "S").source:match("^@(.*/)") .. "?.lua;" .. package.path
local bench = require("common")
local next_token, client_id
local proofs = {}

function init(args)
   client_id = args[1]
   next_token = bench.indices(tonumber(args[2]), tonumber(args[3] or "1"))
   for line in io.lines(args[4]) do
      proofs[#proofs + 1] = line
   end
end

function request()
   local i = next_token()
   -- wrk.format's headers replace wrk.headers: all of them, every time.
   local headers = {
      ["Content-Type"] = "application/x-www-form-urlencoded",
      ["Accept"] = "application/json",
      ["DPoP"] = proofs[i] or "out-of-proofs",
   }
   local body = "grant_type=refresh_token&client_id=" .. client_id .. "&refresh_token=drt-" .. i
   return wrk.format("POST", nil, headers, body)
end

function response(status, headers, body)
   bench.check(status, status == 200 and bench.has(body, "access_token", '"')
      and bench.has(body, "token_type", '"DPoP"') and bench.has(body, "refresh_token", '"'))
end
