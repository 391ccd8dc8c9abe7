"""The exceptions datalake raises on purpose.

Every error a user can cause or meet is one of these; the CLI prints its message as one line and exits with
``exit_code``. Anything else escaping is a bug.

    DatalakeError
    ├── ConfigError       configuration missing or invalid (RUCIO_CONFIG, flags, environment)
    ├── PolicyError       a sharing policy that does not validate or does not allow the action
    ├── CatalogError      Rucio refused or failed a request
    │   └── NotAllowed    ... because the account lacks the right
    ├── StorageError      XRootD / S3 / local storage failed
    │   └── StorageFailure  ... by a class saying what helps (``datalake.storage.failures``: Missing, Corrupt,
    │                       Unreachable, Rejected, Denied, Exists, LocalDisk, Cancelled)
    ├── TransferError     a copy could not be completed
    ├── ProcessingError   a chunk could not be processed from any replica
    │   └── UserCodeError ... because the user's own code raised (``frames``: their traceback)
    └── TestbedError      the local testbed cannot be installed, started or stopped
"""

from __future__ import annotations


class DatalakeError(Exception):
    """Base of every expected error; ``str(err)`` is the one line shown to the user."""

    exit_code = 1


class ConfigError(DatalakeError):
    exit_code = 2


class PolicyError(DatalakeError):
    exit_code = 2  # bad input: a policy file, metadata or a registration that does not validate


class CatalogError(DatalakeError):
    pass


class NotAllowed(CatalogError):
    exit_code = 3


class StorageError(DatalakeError):
    pass


class TransferError(DatalakeError):
    pass


class ProcessingError(DatalakeError):
    """A chunk could not be processed from any replica, or the user's code failed."""


class UserCodeError(ProcessingError):
    """The user's function raised on a worker: their bug, so they get their own frames (``frames``, a tuple of
    ``datalake.tracebacks.Frame``), shown by the CLI under the message and by Python as the exception's note."""

    frames: tuple = ()


class TestbedError(DatalakeError):
    __test__ = False  # not a pytest test class, despite the name


__all__ = [
    "CatalogError",
    "ConfigError",
    "DatalakeError",
    "NotAllowed",
    "PolicyError",
    "ProcessingError",
    "StorageError",
    "TestbedError",
    "TransferError",
    "UserCodeError",
]
