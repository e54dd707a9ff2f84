#!/usr/bin/env python3
"""Sends N requests with distinct 100 KB HTTP methods to a running api (docs/operations.md,
"Security"), then prints the api's RSS and the size and render time of its /metrics.

usage: scripts/method_flood.py API_PID PORT [N=201]
"""
import socket, sys, time
pid, port = int(sys.argv[1]), int(sys.argv[2])
count = int(sys.argv[3]) if len(sys.argv) > 3 else 201

def rss_mb():
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024

def request(raw):
    with socket.create_connection(("127.0.0.1", port)) as s:
        s.sendall(raw)
        data = b""
        while True:
            chunk = s.recv(1 << 20)
            if not chunk:
                break
            data += chunk
    return data

print(f"RSS before: {rss_mb():.0f} MB")
for index in range(count):
    method = (f"M{index:04d}" + "X" * (100 * 1024 - 5)).encode()
    request(method + b" /events HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
print(f"RSS after {count} requests with 100 KB methods: {rss_mb():.0f} MB")
started = time.time()
page = request(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
print(f"/metrics: {len(page) / 1e6:.1f} MB in {time.time() - started:.2f} s; RSS now {rss_mb():.0f} MB")
