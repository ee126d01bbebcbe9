#!/usr/bin/env python3
"""bench/instr_client.py MODE PORT N: N HTTP/1.1 GET / requests to 127.0.0.1:PORT,
one at a time (MODE ka: one keep-alive connection; close: a new connection per
request with Connection: close; pipe: batches of 16 pipelined on one connection;
many: CONNS (default 1000) keep-alive connections opened first, each asked
once, then the N requests round robin over them).
A fixed request count for bench/instr (instructions per request under callgrind).
Exits non-zero if any answer is not 200."""
import socket, sys

mode, port, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
REQ = b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nUser-Agent: instr\r\nAccept: */*\r\n\r\n"
CLOSE = b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"


def read_responses(s, buf, count):
    got = 0
    while got < count:
        i = buf.find(b"\r\n\r\n")
        if i < 0:
            d = s.recv(65536)
            if not d:
                raise SystemExit("closed early")
            buf += d
            continue
        head = buf[:i].decode("latin1")
        if not head.startswith("HTTP/1.1 200"):
            raise SystemExit("bad answer: " + head.splitlines()[0])
        length = 0
        for line in head.split("\r\n")[1:]:
            k, _, v = line.partition(":")
            if k.strip().lower() == "content-length":
                length = int(v)
        while len(buf) < i + 4 + length:
            d = s.recv(65536)
            if not d:
                raise SystemExit("closed early")
            buf += d
        buf = buf[i + 4 + length:]
        got += 1
    return buf


if mode == "many":
    import os
    conns = [socket.create_connection(("127.0.0.1", port))
             for _ in range(int(os.environ.get("CONNS", "1000")))]
    for s in conns:
        s.sendall(REQ)
        read_responses(s, b"", 1)
    for i in range(n):
        s = conns[i % len(conns)]
        s.sendall(REQ)
        read_responses(s, b"", 1)
    for s in conns:
        s.close()
elif mode == "close":
    for _ in range(n):
        s = socket.create_connection(("127.0.0.1", port))
        s.sendall(CLOSE)
        read_responses(s, b"", 1)
        s.close()
else:
    # a new connection every 800 requests (keepalive_requests: 1000 by default)
    k = 16 if mode == "pipe" else 1
    done = 0
    while done < n:
        s = socket.create_connection(("127.0.0.1", port))
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        buf = b""
        upto = min(n, done + 800)
        while done < upto:
            m = min(k, upto - done)
            s.sendall(REQ * m)
            buf = read_responses(s, buf, m)
            done += m
        s.close()
