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
def loopback_serve(access_log: bool = True) -> Iterator[str]:
    """Serve's HTTP proxy on a free 127.0.0.1 port (Ray started here unless one is running) → its base URL.
    Serve is shut down on the way out, whatever happened inside. access_log: the proxy's line per request."""
    import ray
    from ray import serve

    if not ray.is_initialized():  # a bench from the command line; the tests bring their own Ray
        ray.init(log_to_driver=False)
    port = free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port}, logging_config={"enable_access_log": access_log})
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        serve.shutdown()


def run_app(args: dict, name: str = APP, route_prefix: str = "/") -> None:
    """Deploy (or redeploy) the app with these AppArgs at `route_prefix` and wait until every replica is up."""
    from ray import serve

    from r4t.serve.app import build_app

    serve.run(build_app(args), name=name, route_prefix=route_prefix)


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
    out: dict[str, list[int]] = {}
    for pid in sorted(descendants(os.getpid())):
        name = replica_name(process_title(pid), app)
        if name:
            out.setdefault(name, []).append(pid)
    return out


def replica_name(title: str, app: str = APP) -> str | None:
    """The deployment a process title belongs to (`ray::ServeReplica:<app>:<Deployment>[.<method>]`), else None."""
    prefix = f"ray::ServeReplica:{app}:"
    return title[len(prefix):].split(" ", 1)[0].split(".", 1)[0] if title.startswith(prefix) else None


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU a process has used (utime, stime in /proc/<pid>/stat); None once it has ended."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def process_title(pid: int) -> str:
    """A process's command line as one string ('' once it has ended)."""
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return ""


def rss_bytes(pid: int) -> int | None:
    """Resident memory of a process (VmRSS in /proc/<pid>/status); None once it has ended."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None
