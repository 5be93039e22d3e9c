-- wrk script: replays a file, one request a line, in turn. `-- FILE START
-- METHOD`: with GET (the default) a line is a path; with POST it is a JSON
-- body for POST /. It starts at line START + 1 (default 0), so that runs can
-- follow each other through the file.
local lines, n, method = {}, 0, 'GET'

function init(args)
  for line in io.lines(args[1]) do lines[#lines + 1] = line end
  n = tonumber(args[2] or '0')
  method = args[3] or 'GET'
end

function request()
  local line = lines[n % #lines + 1]
  n = n + 1
  if method == 'POST' then
    return wrk.format('POST', '/', { ['Content-Type'] = 'application/json' }, line)
  end
  return wrk.format('GET', line)
end

done = dofile(os.getenv('WRK_REPORT'))
