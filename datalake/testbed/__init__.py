"""The local testbed: real PostgreSQL, Rucio server and XRootD RSEs as native processes on 127.0.0.1."""

from __future__ import annotations

from typing import Any

from datalake.testbed.accounts import ACCOUNTS, DEFAULT_ACCOUNT

__all__ = ["ACCOUNTS", "DEFAULT_ACCOUNT", "Testbed", "TestbedSettings"]


def __getattr__(name: str) -> Any:
    """``Testbed``/``TestbedSettings`` on first use, so commands that never touch the testbed start faster."""
    if name == "Testbed":
        from datalake.testbed.launcher import Testbed

        return Testbed
    if name == "TestbedSettings":
        from datalake.testbed.settings import TestbedSettings

        return TestbedSettings
    raise AttributeError(f"module 'datalake.testbed' has no attribute {name!r}")
