-- W1: the GET URL check, each request with its own signed query from the pool (the URL carries
-- echostr; the query is appended).
dofile("benches/wrk/common.lua")

function request()
  return wrk.format("GET", wrk.path .. "&" .. next_line(), nil, nil)
end
