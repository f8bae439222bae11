"""User-facing error types: one per area, printed by the CLI as one line (exit 2)."""


class SimSiamError(Exception):
    """Base class for errors caused by user input, not by bugs."""


class ConfigError(SimSiamError):
    """A config key, type or value is wrong."""


class DataError(SimSiamError):
    """A dataset file is missing, truncated or malformed."""


class StorageError(SimSiamError):
    """Object storage is unreachable or refuses access."""


class ServiceError(SimSiamError):
    """An embedded service (SeaweedFS, MLflow or Prefect server) cannot start or answer."""
