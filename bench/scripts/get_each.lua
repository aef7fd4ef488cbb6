-- GET /v1/users/{id}, each request the next id of a file (one id a line): cache misses when the
-- cache was emptied first. Arguments: <ids file> <nthreads>. Threads take interleaved ids.
-- No headers table is passed, so wrk.format sends the -H headers (the access token).
local ids = {}
local n = 0

function init(args)
  for line in io.lines(args[1]) do
    ids[#ids + 1] = line
  end
  nthreads = tonumber(args[#args])
end

function request()
  local id = ids[(n * nthreads + tid) % #ids + 1]
  n = n + 1
  return wrk.format("GET", "/v1/users/" .. id)
end
