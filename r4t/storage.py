"""The run directory: a local path, or a URI that pyarrow opens (s3://, gs://, abfs://, hdfs://, file://).

Every stage reads and writes files on the node it runs on. For a URI that is a mirror under
$R4T_MIRROR (default /tmp/r4t-mirror) whose layout spells the URI:

    s3://bucket/runs/exp1  ->  $R4T_MIRROR/s3/bucket/runs/exp1

so any mirror path names its remote twin, and a Ray actor on another node that receives a path from the
driver can `fetch` it before reading and `publish` it after writing. `ray job submit` sets the same
R4T_MIRROR on every node (jobs/runtime_env.yaml). For a local run_dir both are no-ops.

No half-written artifact is ever read as whole, on either side: a download lands under a temporary name and is
renamed into place; an upload goes to a temporary name on the remote side and is moved into place, and the
JSON files (manifests, checkpoint info) go last, so a manifest never describes files that are not there yet.
Copies go by modification time (the newer side wins), so node clocks are assumed to agree within a second.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from r4t.errors import ConfigError
from r4t.io import atomic_path

MIRROR_ENV = "R4T_MIRROR"
_URI = re.compile(r"^([a-zA-Z][a-zA-Z0-9+.-]*)://(.*)$")


def is_uri(run_dir: str | os.PathLike) -> bool:
    return bool(_URI.match(str(run_dir)))


def mirror_base() -> Path:
    return Path(os.environ.get(MIRROR_ENV) or "/tmp/r4t-mirror").resolve()


def run_root(run_dir: str | os.PathLike) -> Path:
    """The folder this node reads and writes for run_dir: the path itself, or the URI's mirror."""
    match = _URI.match(str(run_dir))
    if not match:
        return Path(run_dir)
    scheme, rest = match.groups()
    rest = rest.strip("/")
    if not rest or "?" in rest or ".." in rest.split("/"):
        raise ConfigError(f"run_dir={str(run_dir)!r}: a URI run directory needs a bucket and a path, "
                          "without query options or '..' (configure credentials in the environment)")
    return mirror_base() / scheme.lower() / rest


def remote_of(path: str | os.PathLike) -> str | None:
    """The URI a mirror path stands for; None for a path outside the mirror (a local run_dir)."""
    try:
        rel = Path(path).resolve().relative_to(mirror_base())
    except ValueError:
        return None
    if len(rel.parts) < 2:
        return None
    scheme, rest = rel.parts[0], "/".join(rel.parts[1:])
    return f"file:///{rest}" if scheme == "file" else f"{scheme}://{rest}"


def _filesystem(uri: str):
    import pyarrow.fs as pafs

    try:
        return pafs.FileSystem.from_uri(uri)
    except (ValueError, OSError) as e:  # pyarrow's ArrowInvalid and ArrowIOError derive from these
        raise ConfigError(f"run_dir {uri!r}: pyarrow cannot open it ({e})") from None


def _is_temporary(name: str) -> bool:
    return name.startswith(".") and name.endswith(".tmp")


def _metadata_last(paths: list[str]) -> list[str]:
    return sorted(paths, key=lambda p: (p.endswith(".json"), p))


def fetch(path: str | os.PathLike) -> Path:
    """Bring a mirror file or folder up to date from its remote twin (newer or missing files only). → the path."""
    path = Path(path)
    uri = remote_of(path)
    if uri is None:
        return path
    import pyarrow.fs as pafs

    fs, remote = _filesystem(uri)
    info = fs.get_file_info(remote)
    if info.type == pafs.FileType.NotFound:
        return path
    if info.type == pafs.FileType.File:
        files = [info]
    else:
        files = [f for f in fs.get_file_info(pafs.FileSelector(remote, recursive=True))
                 if f.type == pafs.FileType.File and not _is_temporary(f.base_name)]
    by_path = {f.path: f for f in files}
    for name in _metadata_last(list(by_path)):
        f = by_path[name]
        local = path if info.type == pafs.FileType.File else path / Path(name).relative_to(remote)
        if local.is_file() and local.stat().st_mtime >= f.mtime.timestamp():
            continue
        with atomic_path(local) as tmp:
            with open(tmp, "wb") as out, fs.open_input_stream(name) as src:
                while block := src.read(1 << 22):
                    out.write(block)
            os.utime(tmp, (f.mtime.timestamp(), f.mtime.timestamp()))  # this copy is as new as the remote one
    return path


def publish(path: str | os.PathLike) -> None:
    """Copy a mirror file or folder to its remote twin (new or changed files only, JSON files last)."""
    path = Path(path)
    uri = remote_of(path)
    if uri is None or not path.exists():
        return
    import pyarrow.fs as pafs

    fs, remote = _filesystem(uri)
    if path.is_file():
        local_files = {path: remote}
    else:
        local_files = {p: f"{remote}/{p.relative_to(path).as_posix()}" for p in path.rglob("*")
                       if p.is_file() and not _is_temporary(p.name)}
    existing = {f.path: f for f in fs.get_file_info(list(local_files.values()))}
    order = {dest: src for src, dest in local_files.items()}
    for dest in _metadata_last(list(order)):
        src, have = order[dest], existing[dest]
        stat = src.stat()
        if have.type == pafs.FileType.File and have.mtime.timestamp() >= stat.st_mtime:
            continue  # the remote copy is as new: another node may have written it after this one fetched
        parent, name = dest.rsplit("/", 1)
        fs.create_dir(parent, recursive=True)
        tmp = f"{parent}/.{name}.{os.getpid()}.upload.tmp"
        with open(src, "rb") as f, fs.open_output_stream(tmp) as out:
            while block := f.read(1 << 22):
                out.write(block)
        fs.move(tmp, dest)
        # The remote copy is now the newer one; stamp the local file with its time so neither side re-copies it.
        stamped = fs.get_file_info(dest).mtime.timestamp()
        os.utime(src, (stamped, stamped))


def remove(path: str | os.PathLike) -> None:
    """Delete a mirror folder here and on the remote side (a local folder: just here)."""
    import shutil

    shutil.rmtree(path, ignore_errors=True)
    uri = remote_of(path)
    if uri is not None:
        import pyarrow.fs as pafs

        fs, remote = _filesystem(uri)
        if fs.get_file_info(remote).type == pafs.FileType.Directory:
            fs.delete_dir(remote)


def storage_uri(path: str | os.PathLike) -> str:
    """What to hand a tool that opens pyarrow filesystems itself (Ray Train storage_path, Ray Data): the remote
    URI of a mirror path, else the absolute local path."""
    return remote_of(path) or str(Path(path).resolve())

