"""Consoles shared by the sub-commands: results on stdout, messages and progress on stderr.

No emoji codes: rich would turn the ``:name:`` in DIDs such as ``mc:smile:`` into pictures."""

from rich.console import Console

console = Console(highlight=False, emoji=False)
err_console = Console(stderr=True, highlight=False, emoji=False)
