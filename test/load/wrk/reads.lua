-- wrk script: the three lookups in turn, over 10,000 users and 500 movies;
-- every fourth request names a user or movie that has no events (a 404).
local USERS, MOVIES = 10000, 500
local n = 0

function request()
  local k = n % USERS
  local user = (n % 4 == 3) and ('nobody-' .. k) or ('user-' .. k)
  local slug = (n % 4 == 3) and ('nothing-' .. k) or ('movie-' .. (k % MOVIES))
  local kind = n % 3
  n = n + 1
  if kind == 0 then return wrk.format('GET', '/users/' .. user .. '/watch-time') end
  if kind == 1 then return wrk.format('GET', '/movies/' .. slug .. '/watch-time') end
  return wrk.format('GET', '/users/' .. user .. '/movies/' .. slug .. '/latest-moment')
end

done = dofile(os.getenv('WRK_REPORT'))
