"""User-facing errors: each names the file, field or value at fault so the fix is obvious."""


class R4TError(Exception):
    """Base class for errors caused by input (files, configs, data), not by a bug."""


class ConfigError(R4TError):
    """A config file or command-line override is invalid."""


class DataError(R4TError):
    """An input or artifact file is missing, malformed or violates its schema."""


class ManifestMismatch(R4TError):
    """Two artifacts that must agree (encoder, dimension, catalog) do not."""
