"""Named implementations chosen from config (advantage estimators, policy losses): one line to add one."""

from __future__ import annotations

from typing import Callable, Generic, TypeVar

from r4t.errors import ConfigError

Fn = TypeVar("Fn", bound=Callable)


class Registry(dict, Generic[Fn]):
    def __init__(self, key: str, kind: str):
        """key: the config key that names an entry (e.g. "rl.loss"), for errors; kind: what an entry is."""
        super().__init__()
        self.key, self.kind = key, kind

    def register(self, name: str) -> Callable[[Fn], Fn]:
        """Decorator: make the function selectable from config as ``name``."""
        def add(fn: Fn) -> Fn:
            self[name] = fn
            return fn
        return add

    def lookup(self, name: str) -> Fn:
        """The entry registered as ``name``; a ConfigError naming the key, the value and the known names otherwise."""
        if name not in self:
            raise ConfigError(f"{self.key}={name!r}: unknown {self.kind}; known: {', '.join(sorted(self))}")
        return self[name]
