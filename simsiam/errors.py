"""User-facing error types: one per area, printed by the CLI as one line (exit 2)."""


class SimSiamError(Exception):
    """Base class for errors caused by user input, not by bugs."""


class ConfigError(SimSiamError):
    """A config key, type or value is wrong."""


class DataError(SimSiamError):
    """A dataset file is missing, truncated or malformed."""


class StorageError(SimSiamError):
    """Object storage is unreachable or refuses access."""


class TrackingError(SimSiamError):
    """The tracking server is unreachable, or a model or alias does not exist."""


class ServiceError(SimSiamError):
    """An embedded service (SeaweedFS, MLflow or Prefect server) cannot start or answer."""


class DiskFullError(SimSiamError):
    """A write ran out of space (ENOSPC, which torch re-raises as RuntimeError when it writes itself)."""

    def __init__(self, path: object, needed: int | None = None, note: str = "") -> None:
        need = f": it needs {needed / 2**20:.1f} MiB" if needed is not None else ""
        super().__init__(f"no space left on the device of {path}{need}{note}; free some space and re-run")
