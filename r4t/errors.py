"""User-facing errors: each names the file, field or value at fault so the fix is obvious; and how an entry point
ends on one, or on SIGTERM."""

from __future__ import annotations

import sys
from collections.abc import Callable


class R4TError(Exception):
    """Base class for errors caused by input (files, configs, data), not by a bug."""


class ConfigError(R4TError):
    """A config file or command-line override is invalid."""


class DataError(R4TError):
    """An input or artifact file is missing, malformed or violates its schema."""


class ManifestMismatch(R4TError):
    """Two artifacts that must agree (encoder, dimension, catalog) do not."""


class Stopped(BaseException):
    """SIGTERM arrived (what systemd, Kubernetes and `ray job stop` send; r4t.jobs.common.ensure_ray turns it into
    this). A BaseException, like Ctrl-C: it unwinds through `finally` blocks (a half-written artifact is removed,
    never renamed into place) and no `except Exception` swallows it."""


def reporting_errors(work: Callable[[], int | None], prog: str) -> int:
    """Run an entry point → its exit status: bad input (any R4TError) is one line naming it and status 2, not a
    traceback; SIGTERM is one line and status 0, Ctrl-C the same line and 130 (the shell's code for it): a
    rerun resumes from what the stages wrote."""
    try:
        return work() or 0
    except R4TError as e:
        print(f"{prog}: error: {e}", file=sys.stderr)
        return 2
    except (Stopped, KeyboardInterrupt) as e:
        cause, status = (str(e), 0) if isinstance(e, Stopped) else ("Ctrl-C", 130)
        print(f"{prog}: stopped by {cause}; what was written is kept, and a rerun resumes from it", file=sys.stderr)
        return status
