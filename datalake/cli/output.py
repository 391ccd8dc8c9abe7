"""Consoles shared by the sub-commands: results on stdout, messages and progress on stderr.

No emoji codes: rich would turn the ``:name:`` in DIDs such as ``mc:smile:`` into pictures."""

from typing import Any

from rich.console import Console


class _Stdout(Console):
    """Knows whether this run printed its JSON result: a ``--json`` run prints one JSON document, its result or,
    failing before it had one, the error."""

    printed_json = False

    def print_json(self, *args: Any, **kwargs: Any) -> None:
        self.printed_json = True
        super().print_json(*args, **kwargs)


console = _Stdout(highlight=False, emoji=False)
err_console = Console(stderr=True, highlight=False, emoji=False)
