"""Which worker process of a `--workers N` server holds a connection, read from /proc."""

from __future__ import annotations

import os
import socket
from pathlib import Path


def children(pid: int) -> set[int]:
    """The child processes of `pid` (a supervisor's workers)."""
    with open(f"/proc/{pid}/task/{pid}/children") as fh:
        return {int(child) for child in fh.read().split()}


def holder(sock: socket.socket, workers: set[int]) -> int:
    """Which of `workers` holds the server's end of the connected `sock` (no guessing)."""
    mine = sock.getsockname()[1]
    theirs = sock.getpeername()[1]
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            local, remote = fields[1].rsplit(":", 1)[1], fields[2].rsplit(":", 1)[1]
            if int(local, 16) == theirs and int(remote, 16) == mine:
                inodes.add(f"socket:[{fields[9]}]")
    for pid in workers:
        for fd in Path(f"/proc/{pid}/fd").iterdir():
            try:
                if os.readlink(fd) in inodes:
                    return pid
            except FileNotFoundError:  # closed while we looked
                continue
    raise AssertionError(f"no worker of {sorted(workers)} holds the connection from port {mine}")
