#!/usr/bin/env python3
"""bench/idle_client.py PORT N: open N keep-alive connections to 127.0.0.1:PORT,
send one GET / on each and read its answer, then print "ready" and hold them
idle until stdin closes (bench/idle-rss measures the server meanwhile)."""
import resource, socket, sys

port, n = int(sys.argv[1]), int(sys.argv[2])
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
REQ = b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
conns = []
for i in range(n):
    s = socket.create_connection(("127.0.0.1", port))
    s.sendall(REQ)
    buf = b""
    while b"hello\n" not in buf:
        d = s.recv(4096)
        if not d:
            raise SystemExit("connection %d closed early" % i)
        buf += d
    conns.append(s)
print("ready", flush=True)
sys.stdin.read()
for s in conns:
    s.close()
