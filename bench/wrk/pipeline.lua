-- wrk -s bench/wrk/pipeline.lua ... -- DEPTH
-- Every connection writes DEPTH requests at once (HTTP/1.1 pipelining); wrk counts every response.
local req
function init(args)
  local depth = tonumber(args[1]) or 1
  local t = {}
  for i = 1, depth do
    t[i] = wrk.format(nil, "/")
  end
  req = table.concat(t)
end
function request()
  return req
end
