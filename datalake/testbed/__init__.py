"""The local testbed: real PostgreSQL, Rucio server and XRootD RSEs as native processes on 127.0.0.1."""

from datalake.testbed.launcher import Testbed
from datalake.testbed.settings import TestbedSettings

__all__ = ["Testbed", "TestbedSettings"]
