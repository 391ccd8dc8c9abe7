"""The testbed's accounts: a client config is written for each."""

ACCOUNTS = ("datamanager", "analyst", "dmanalyst", "root")
DEFAULT_ACCOUNT = "datamanager"
