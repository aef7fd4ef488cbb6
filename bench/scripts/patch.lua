-- PATCH /v1/users/{id} with If-Match: the current etag of each user. Arguments: <pool file> <nthreads>.
-- The pool file has "<id> <etag>" lines. Requests go round the pool (thread t takes the ids t,
-- t+nthreads, ...), and each response's body gives the user's new etag, so a user is patched
-- again only with the etag of its latest version. A user whose patch is still in flight is
-- skipped (the pool is much larger than the number of connections), so no user ever has two.
-- The -H headers (the access token) are in wrk.headers; wrk.format uses only the table it is given.
local ids = {}
local etags = {}
local busy = {}
local n = 0

function init(args)
  for line in io.lines(args[1]) do
    local id, etag = line:match("^(%S+)%s+(%S+)$")
    ids[#ids + 1] = id
    etags[id] = etag
  end
  nthreads = tonumber(args[#args])
end

function request()
  local id
  for _ = 1, #ids do
    id = ids[(n * nthreads + tid) % #ids + 1]
    n = n + 1
    if not busy[id] then
      break
    end
  end
  busy[id] = true
  local headers = {}
  for name, value in pairs(wrk.headers) do
    headers[name] = value
  end
  headers["Content-Type"] = "application/json"
  headers["If-Match"] = '"' .. etags[id] .. '"'
  return wrk.format("PATCH", "/v1/users/" .. id, headers,
    string.format('{"display_name":"Bench Patch %d"}', n))
end

function response(status, headers, body)
  local id = body:match('"id"%s*:%s*"([^"]+)"')
  local etag = body:match('"etag"%s*:%s*"([^"]+)"')
  if id then
    busy[id] = nil
    if etag then
      etags[id] = etag
    end
  end
end
