-- wrk script: POST / with heartbeats from 10,000 users over 500 movies, each
-- pair moving forward 5 s a round. `-- N START MOVIES USERS` sends N events a
-- request (default 1), starting from the START-th event (default 0), over
-- MOVIES movies (default 500) and USERS users (default 10,000).
local USERS, MOVIES = 10000, 500
local size, n = 1, 0

function init(args)
  size = tonumber(args[1] or '1')
  n = tonumber(args[2] or '0')
  MOVIES = tonumber(args[3] or '500')
  USERS = tonumber(args[4] or '10000')
end

local function event()
  local e = string.format('{"user":"user-%d","slug":"movie-%d","at":%d}', n % USERS, n % MOVIES, math.floor(n / USERS) * 5)
  n = n + 1
  return e
end

function request()
  local body
  if size == 1 then
    body = event()
  else
    local events = {}
    for i = 1, size do events[i] = event() end
    body = '[' .. table.concat(events, ',') .. ']'
  end
  return wrk.format('POST', '/', { ['Content-Type'] = 'application/json' }, body)
end

done = dofile(os.getenv('WRK_REPORT'))
