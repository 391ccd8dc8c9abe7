"""datalake's Rucio policy package: Rucio's generic policy plus a data-manager role.

Loaded by the Rucio *server* (``[policy] package = datalake_policy``, this directory on its PYTHONPATH); it must
import nothing from datalake, whose dependencies the server's venv does not have.
"""

SUPPORTED_VERSION = [">=41.0,<42.0"]


def get_algorithms() -> dict:
    return {}
