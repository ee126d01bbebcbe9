// bench/ws-echo.js URL: node's ws against bench/ws_echo.lua: 20000
// sequential round trips of 100 bytes, then one 16 MiB binary message.
//   NODE_PATH=/usr/share/nodejs node bench/ws-echo.js ws://127.0.0.1:8080
const WebSocket = require('ws');
const N = 20000;
const ws = new WebSocket(process.argv[2] + '/', { perMessageDeflate: false });
let i = 0, t0;
ws.on('open', () => { t0 = process.hrtime.bigint(); ws.send('x'.repeat(100)); });
ws.on('message', () => {
  if (++i === N) {
    const s = Number(process.hrtime.bigint() - t0) / 1e9;
    console.log(`${N} round trips of 100 bytes in ${s.toFixed(2)} s: ${(N / s).toFixed(0)}/s`);
    const big = Buffer.alloc(16 << 20, 7);
    const t1 = process.hrtime.bigint();
    ws.once('message', (d) => {
      const s2 = Number(process.hrtime.bigint() - t1) / 1e9;
      console.log(`one 16 MiB binary message echoed in ${s2.toFixed(3)} s (${d.length} bytes back)`);
      ws.close();
    });
    ws.send(big);
    return;
  }
  if (i < N) ws.send('x'.repeat(100));
});
