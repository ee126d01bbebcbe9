-- fdpool.testing: what users need to test their own handlers in busted.
-- testing.conn{} is an in-memory conn with the real conn's API and return
-- conventions (readrequest and readchunked mirror the C parser in
-- src/http_parse.c), so a
-- handler runs in the test's own process; testing.http_request() drives an
-- HTTP handler through it; testing.start{} runs the real `pool` binary in
-- the background for integration specs. Pure Lua; only testing.start (and
-- the polling in wait_until) needs the C module `fdpool`.
-- The parts: fdpool.testing.conn (the in-memory conn), .http (the HTTP
-- helpers), .json (the JSON decoder), .process (the process harness),
-- .websocket (a WebSocket client's frames in memory).
local tconn = require "fdpool.testing.conn"
local http = require "fdpool.testing.http"
local json = require "fdpool.testing.json"
local process = require "fdpool.testing.process"
local ws = require "fdpool.testing.websocket"

return {
  conn = tconn.conn,
  tasks = tconn.tasks,
  parse_head = tconn.parse_head,
  run = http.run,
  build_request = http.build_request,
  parse_response = http.parse_response,
  http_request = http.http_request,
  json_decode = json.json_decode,
  wait_until = process.wait_until,
  pool_binary = process.pool_binary,
  start = process.start,
  websocket = ws.websocket,
  ws_frame = ws.frame,
  ws_parse_frames = ws.parse_frames,
}
