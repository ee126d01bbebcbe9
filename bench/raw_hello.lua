-- bench/raw_hello.lua: the floor of a Lua handler in fdpool: one
-- conn:receiveany and one conn:send per request, no HTTP library (it
-- takes each read as one whole request, as wrk and bench/instr_client.py
-- send them: a measuring tool, not a server). What fdpool itself costs
-- per request around any Lua handler (the loop, the wait, the resume,
-- two conn methods): `SCRIPT=bench/raw_hello.lua bench/instr ka`.
local RESP = "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 6\r\n\r\nhello\n"

return function(conn)
  while true do
    local d = conn:receiveany(4096)
    if not d then return end
    if not conn:send(RESP) then return end
  end
end
