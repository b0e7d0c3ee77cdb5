-- W2/W3/W5: a signed plaintext text push (content = first script argument) with a fresh MsgId
-- on every request, each with its own signed query from the pool (appended to the URL).
dofile("benches/wrk/common.lua")

local content
local counter = 0
local headers = { ["Content-Type"] = "text/xml" }

function init(args)
  content = args[1] or "hello 你好"
end

function request()
  counter = counter + 1
  local path = wrk.path .. "&" .. next_line()
  return wrk.format("POST", path, headers, text_message(content, msg_id(tid, counter)))
end
