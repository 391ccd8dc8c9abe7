"""datalake: a federated data-lake client and transfer orchestrator for Rucio/XRootD data lakes."""

from importlib.metadata import PackageNotFoundError, version

from datalake.errors import (
    CatalogError,
    ConfigError,
    DatalakeError,
    NotAllowed,
    PolicyError,
    StorageError,
    TestbedError,
    TransferError,
)
from datalake.lake import Lake

try:
    __version__ = version("datalake")
except PackageNotFoundError:  # running from a source tree without installing
    __version__ = "0+unknown"

__all__ = [
    "CatalogError",
    "ConfigError",
    "DatalakeError",
    "Lake",
    "NotAllowed",
    "PolicyError",
    "StorageError",
    "TestbedError",
    "TransferError",
    "__version__",
]
