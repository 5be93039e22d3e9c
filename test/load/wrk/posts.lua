-- wrk script: POSTs the JSON bodies of a file, one a line, in turn. `-- FILE
-- START` starts at line START + 1 (default 0), so that runs can follow each
-- other through the file.
local bodies, n = {}, 0

function init(args)
  for line in io.lines(args[1]) do bodies[#bodies + 1] = line end
  n = tonumber(args[2] or '0')
end

function request()
  local body = bodies[n % #bodies + 1]
  n = n + 1
  return wrk.format('POST', '/', { ['Content-Type'] = 'application/json' }, body)
end

done = dofile(os.getenv('WRK_REPORT'))
