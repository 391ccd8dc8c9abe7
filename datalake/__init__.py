"""datalake: a federated data-lake client and transfer orchestrator for Rucio/XRootD data lakes."""

from datalake.errors import (
    CatalogError,
    ConfigError,
    DatalakeError,
    NotAllowed,
    PolicyError,
    ProcessingError,
    StorageError,
    TestbedError,
    TransferError,
    UserCodeError,
)
from datalake.lake import Lake


def __getattr__(name: str) -> str:
    """``__version__`` on demand: importlib.metadata costs more start-up time than the rest of the CLI."""
    if name != "__version__":
        raise AttributeError(f"module 'datalake' has no attribute {name!r}")
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("datalake")
    except PackageNotFoundError:  # running from a source tree without installing
        return "0+unknown"


__all__ = [
    "CatalogError",
    "ConfigError",
    "DatalakeError",
    "Lake",
    "NotAllowed",
    "PolicyError",
    "ProcessingError",
    "StorageError",
    "TestbedError",
    "TransferError",
    "UserCodeError",
    "__version__",
]
