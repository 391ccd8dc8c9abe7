"""``Lake``: the Python entry point, configured exactly like the CLI and the stock ``rucio`` tools."""

from __future__ import annotations

import os
from functools import cached_property
from typing import Any

from datalake.catalog import Catalog, ClientConfig


class Lake:
    """A data lake as one account sees it.

    >>> lake = Lake()                      # from $RUCIO_CONFIG, like `rucio` and `datalake`
    >>> lake = Lake("~/analyst/rucio.cfg")  # or an explicit client config
    """

    def __init__(self, config: str | os.PathLike | None = None, *, timeout: int = 60) -> None:
        self.config = ClientConfig.from_file(config)
        self.timeout = timeout

    def __repr__(self) -> str:
        return f"Lake(account={self.account!r}, rucio={self.config.rucio_host!r})"

    @property
    def account(self) -> str:
        return self.config.account

    @cached_property
    def catalog(self) -> Catalog:
        return Catalog(self.config, timeout=self.timeout)

    def whoami(self) -> dict[str, Any]:
        """The Rucio account this lake acts as (as ``rucio whoami``)."""
        return self.catalog.whoami()

    def rses(self, expression: str = "*") -> list[dict[str, Any]]:
        """Storage elements matching a Rucio RSE expression, with their attributes."""
        return self.catalog.rses(expression)
