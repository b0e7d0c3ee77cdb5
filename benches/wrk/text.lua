-- W2/W3/W5: a signed plaintext text push (content = first script argument) with a fresh MsgId
-- on every request. The URL carries the precomputed signature.
dofile("benches/wrk/common.lua")

local content
local counter = 0
local headers = { ["Content-Type"] = "text/xml" }

function init(args)
  content = args[1] or "hello 你好"
end

function request()
  counter = counter + 1
  return wrk.format("POST", nil, headers, text_message(content, msg_id(tid, counter)))
end
