-- Shared by the scenario scripts of bench/tokens.py (loaded with require from their directory).
--
-- wrk counts statuses >= 400 itself ("Non-2xx or 3xx responses"). This adds what it cannot see:
-- an answer below 400 that is wrong (a 200 without the expected JSON, a redirect), counted per
-- thread in `wrong`. done() prints one line for bench/tokens.py to read:
--   bench-result wrong=<n> next=<next unused seeded index> p50_us=<n> p99_us=<n>
-- Indexed scripts (refresh, code) give thread k of T the indices first+k, first+k+T, ...; every
-- index request() hands out counts as used, even one wrk never sends (wrk calls request() once
-- to check the script before the run), so `next` is always safe to start the next run from.
--
-- init(args) gets the URL in args[0] and the words after "--" in args[1], args[2], ...

local M = {}
local threads = {}

wrong = 0
next_index = 0

function setup(thread)
   thread:set("thread_number", #threads)
   table.insert(threads, thread)
end

function done(summary, latency, requests)
   local total_wrong, next_unused = 0, 0
   for _, thread in ipairs(threads) do
      total_wrong = total_wrong + (thread:get("wrong") or 0)
      next_unused = math.max(next_unused, thread:get("next_index") or 0)
   end
   io.write(string.format("bench-result wrong=%d next=%d p50_us=%d p99_us=%d\n",
      total_wrong, next_unused, latency:percentile(50.0), latency:percentile(99.0)))
end

-- Count a wrong answer: a status below 400 (wrk counts the others) that is not right.
function M.check(status, right)
   if status < 400 and not right then
      wrong = wrong + 1
   end
end

-- A JSON body holding "name": <pattern> (Django and Authlib write ": " between them).
function M.has(body, name, pattern)
   return body ~= nil and body:find('"' .. name .. '":%s*' .. (pattern or '')) ~= nil
end

-- POST application/x-www-form-urlencoded with HTTP Basic credentials (base64 of id:secret).
function M.form_post(basic)
   wrk.method = "POST"
   wrk.headers["Authorization"] = "Basic " .. basic
   wrk.headers["Content-Type"] = "application/x-www-form-urlencoded"
   wrk.headers["Accept"] = "application/json"
end

-- Indexed scripts: this thread's first index and stride; next_index is kept current.
function M.indices(first, thread_count)
   local n = thread_number or 0
   local stride = thread_count
   local current = first + n
   next_index = current
   return function()
      local index = current
      current = current + stride
      next_index = current
      return index
   end
end

return M
