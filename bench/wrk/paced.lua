-- wrk -s bench/wrk/paced.lua ... -- DELAY_MS
-- Every connection waits DELAY_MS (whole milliseconds: wrk's timer resolution) after each response before
-- sending its next request, so the offered rate is about connections * 1000 / (DELAY_MS + latency).
local d = 1
function init(args)
  d = tonumber(args[1]) or 1
end
function delay()
  return d
end
