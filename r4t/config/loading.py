"""Loading a stage's schema from YAML with OmegaConf, overridden by dotted keys, and dumping it as plain data.

    cfg = load_config(PrepareConfig, "jobs/data.yaml", ["index.factory=IVF256,Flat"])

An unknown key, a value of the wrong type or an out-of-range value raises ConfigError naming the key, the
value and where it came from (the YAML file or the command line), before any work starts.
"""

from __future__ import annotations

import os
from dataclasses import fields, is_dataclass
from pathlib import Path
from typing import Any, TypeVar

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from r4t.errors import ConfigError

T = TypeVar("T")


def _describe(e: OmegaConfBaseException) -> str:
    msg = (getattr(e, "msg", None) or str(e) or type(e).__name__).splitlines()[0]
    key = getattr(e, "full_key", None)
    return f"key '{key}': {msg}" if key else msg


def _file_layers(path: Path, below: tuple[Path, ...] = ()) -> list[tuple[Path, DictConfig]]:
    """A job file and the files it builds on, base first: `base: other.yaml` (relative to the file) makes the file
    state only what differs from the other, so the two cannot drift apart."""
    if not path.is_file():
        raise ConfigError(f"{path}: config file not found")
    if path.resolve() in below:
        raise ConfigError(f"{path}: `base` comes back to this file ({' -> '.join(str(p) for p in below)})")
    try:
        raw = OmegaConf.load(path)
    except Exception as e:  # YAML syntax errors come from the yaml parser
        raise ConfigError(f"{path}: cannot parse YAML ({str(e).splitlines()[0]})") from None
    if not isinstance(raw, DictConfig):
        raise ConfigError(f"{path}: the top level must be a mapping of keys, not a {type(raw).__name__}")
    base = raw.pop("base", None)
    if base is None:
        return [(path, raw)]
    if not isinstance(base, str):
        raise ConfigError(f"{path}: base: {base!r} must be the path of another job file")
    return _file_layers(path.parent / base, (*below, path.resolve())) + [(path, raw)]


def _empty_mappings(node: DictConfig, prefix: str = "") -> list[str]:
    """Dotted keys of a YAML layer whose value is an empty mapping."""
    out = []
    for key, value in node.items_ex(resolve=False):
        if isinstance(value, DictConfig):
            out += [f"{prefix}{key}"] if len(value) == 0 else _empty_mappings(value, f"{prefix}{key}.")
    return out


def load_config(schema: type[T], path: str | os.PathLike | None = None, overrides: list[str] = ()) -> T:
    """Schema defaults ← YAML file ← dotted overrides, checked at each step; returns a schema instance."""
    cfg = OmegaConf.structured(schema)
    for file, layer in _file_layers(Path(path)) if path is not None else []:
        try:
            cfg = OmegaConf.merge(cfg, layer)
            for key in _empty_mappings(layer):  # `{}` over a base's mapping empties it (a merge would keep it)
                OmegaConf.update(cfg, key, {}, merge=False)
        except OmegaConfBaseException as e:
            raise ConfigError(f"{file}: {_describe(e)}") from None
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"command line: override {item!r} is not of the form key=value")
        try:
            cfg = OmegaConf.merge(cfg, OmegaConf.from_dotlist([item]))
        except OmegaConfBaseException as e:
            raise ConfigError(f"command line override {item!r}: {_describe(e)}") from None
    source = f"{path or 'defaults'}{' + command line' if overrides else ''}"
    try:
        return OmegaConf.to_object(cfg)
    except ConfigError as e:
        raise ConfigError(f"{source}: {e}") from None
    except OmegaConfBaseException as e:
        raise ConfigError(f"{source}: {_describe(e)}") from None


def to_dict(obj: Any) -> dict:
    """A config instance as plain data, for manifests and logs."""
    if is_dataclass(obj):
        return {f.name: to_dict(getattr(obj, f.name)) for f in fields(obj)}
    if isinstance(obj, list):
        return [to_dict(v) for v in obj]
    return obj
