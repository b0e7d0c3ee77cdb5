-- ACCT1/ACCT100: W2 spread over many accounts. Each pool line is a whole target, made by
-- `gen_safe account-queries`: one account's path and a query signed with that account's token,
-- the accounts in turn; the URL given to wrk only names the server.
dofile("benches/wrk/common.lua")

local content
local counter = 0
local headers = { ["Content-Type"] = "text/xml" }

function init(args)
  content = args[1] or "hello 你好"
end

function request()
  counter = counter + 1
  return wrk.format("POST", next_line(), headers, text_message(content, msg_id(tid, counter)))
end
