-- POST /v1/users with a unique email per request. Arguments: <run tag> <nthreads>.
local tag = ""
local n = 0
local headers = { ["Content-Type"] = "application/json" }

function init(args)
  tag = args[1] .. "-" .. tid
  nthreads = tonumber(args[#args])
end

function request()
  n = n + 1
  local body = string.format(
    '{"email":"bench-%s-%d@example.com","display_name":"Bench User %d"}', tag, n, n)
  return wrk.format("POST", "/v1/users", headers, body)
end
