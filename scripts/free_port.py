#!/usr/bin/env python3
"""A free TCP port on 127.0.0.1 for a service a script starts, printed when run.

The port comes from below the kernel's ephemeral range (and 10,000 below it, for a Redis
Cluster node's bus port), never from a bind to port 0. A port the kernel handed out for
port 0 sits in the ephemeral range, where any outgoing connection made before the
service binds (a database pool, a readiness probe) may take it first; the service then
fails to start with "address in use". That happened to an api of the chaos soak in CI.
"""

import random
import socket

# Ports handed out by this process, so two calls never return the same one.
_given = set()


def _ephemeral_low():
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as file:
            return int(file.read().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def free_port():
    """A port nothing listens on now and that this process has not handed out before."""
    high = max(_ephemeral_low() - 10_000 - 1, 11_000)
    for _ in range(1000):
        port = random.randint(10_000, high)
        if port in _given:
            continue
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                continue
        _given.add(port)
        return port
    raise RuntimeError("no free port below the ephemeral range")


if __name__ == "__main__":
    print(free_port())
