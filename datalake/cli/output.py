"""Consoles shared by the sub-commands: results on stdout, messages and progress on stderr.

No emoji codes: rich would turn the ``:name:`` in DIDs such as ``mc:smile:`` into pictures."""

import json
from typing import Any

from rich.console import Console


class _Stdout(Console):
    """Knows whether this run printed its JSON result: a ``--json`` run prints one JSON document, its result or,
    failing before it had one, the error."""

    printed_json = False

    def print_json(self, text: str, **kwargs: Any) -> None:
        """Rich's pretty JSON on a terminal; written as is to a pipe or file (rich took 6 s to lay out a 10,000-file
        pull's summary that nobody was looking at)."""
        self.printed_json = True
        if self.is_terminal:
            super().print_json(text, **kwargs)
        else:
            self.file.write(json.dumps(json.loads(text), indent=2) + "\n")
            self.file.flush()


console = _Stdout(highlight=False, emoji=False)
err_console = Console(stderr=True, highlight=False, emoji=False)
