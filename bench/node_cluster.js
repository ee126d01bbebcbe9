// bench/node_cluster.js PORT WORKERS WWW: node cluster with SCHED_RR (the primary
// accepts and passes each handle to a worker over IPC, the same design as fdpool),
// the peer of docs/performance.md's table. "/big.bin" is streamed
// from WWW with fs.createReadStream; anything else answers "hello\n".
'use strict';
const cluster = require('cluster');
const http = require('http');
const fs = require('fs');
const path = require('path');
const port = Number(process.argv[2] || 18183);
const workers = Number(process.argv[3] || 2);
const www = process.argv[4] || '.';
cluster.schedulingPolicy = cluster.SCHED_RR;

if (cluster.isPrimary) {
  for (let i = 0; i < workers; i++) cluster.fork();
  const stop = () => {
    for (const id in cluster.workers) cluster.workers[id].process.kill('SIGTERM');
    process.exit(0);
  };
  process.on('SIGTERM', stop);
  process.on('SIGINT', stop);
} else {
  const big = path.join(www, 'big.bin');
  http.createServer((req, res) => {
    if (req.url === '/big.bin') {
      fs.stat(big, (err, st) => {
        if (err) { res.writeHead(404); res.end(); return; }
        res.writeHead(200, { 'Content-Type': 'application/octet-stream', 'Content-Length': st.size });
        fs.createReadStream(big).pipe(res);
      });
      return;
    }
    res.writeHead(200, { 'Content-Type': 'text/plain', 'Content-Length': 6 });
    res.end('hello\n');
  }).listen({ host: '127.0.0.1', port, backlog: 4096 });
}
