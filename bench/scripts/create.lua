-- POST /v1/users with a unique email per request. Arguments: <run tag> <nthreads>.
-- The -H headers (the access token) are in wrk.headers; wrk.format uses only the table it is given.
local tag = ""
local n = 0
local headers = {}

function init(args)
  tag = args[1] .. "-" .. tid
  nthreads = tonumber(args[#args])
  for name, value in pairs(wrk.headers) do
    headers[name] = value
  end
  headers["Content-Type"] = "application/json"
end

function request()
  n = n + 1
  local body = string.format(
    '{"email":"bench-%s-%d@example.com","display_name":"Bench User %d"}', tag, n, n)
  return wrk.format("POST", "/v1/users", headers, body)
end
