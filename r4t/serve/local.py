"""The app on this machine for benches and tests: Serve on a free loopback port, and the replicas' processes.

Ray titles a replica's process `ray::ServeReplica:<app>:<Deployment>` (with `.<method>` appended while one runs);
only processes descending from this one count, so a second Ray on the same machine (another user's tests, another
bench) is never measured or signalled.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

APP = "r4t"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def loopback_serve() -> Iterator[str]:
    """Serve's HTTP proxy on a free 127.0.0.1 port (Ray started here unless one is running) → its base URL.
    Serve is shut down on the way out, whatever happened inside."""
    import ray
    from ray import serve

    if not ray.is_initialized():  # a bench from the command line; the tests bring their own Ray
        ray.init(log_to_driver=False)
    port = free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        serve.shutdown()


def run_app(args: dict) -> None:
    """Deploy (or redeploy) the app with these AppArgs at / and wait until every replica is up."""
    from ray import serve

    from r4t.serve.app import build_app

    serve.run(build_app(args), name=APP, route_prefix="/")


def descendants(root: int) -> set[int]:
    """The pids of every process under `root` (its children, theirs, and so on)."""
    children: dict[int, list[int]] = {}
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            stat = (proc / "stat").read_text()
        except OSError:  # ended while being looked at
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])  # the title in (...) may hold spaces and parentheses
        children.setdefault(ppid, []).append(int(proc.name))
    found, todo = set(), [root]
    while todo:
        for child in children.get(todo.pop(), ()):
            found.add(child)
            todo.append(child)
    return found


def replica_processes(app: str = APP) -> dict[str, list[int]]:
    """Deployment name → pids of its replicas' processes, among this process's descendants (Ray started here)."""
    prefix = f"ray::ServeReplica:{app}:".encode()
    out: dict[str, list[int]] = {}
    for pid in sorted(descendants(os.getpid())):
        try:
            title = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            continue
        if title.startswith(prefix):
            name = title[len(prefix):].split(b"\0", 1)[0].split(b".", 1)[0].decode()
            out.setdefault(name, []).append(pid)
    return out


def rss_bytes(pid: int) -> int | None:
    """Resident memory of a process (VmRSS in /proc/<pid>/status); None once it has ended."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None
