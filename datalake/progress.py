"""The one progress protocol, with a no-op default (fsspec's ``Callback`` habit): pull and replicate report files
and bytes, register files and bytes uploaded, process and deliver chunks and events. The CLI passes a rich
display (``cli/progress.py``); the Python API passes nothing and gets ``NO_PROGRESS``."""

from __future__ import annotations

from typing import Protocol


class Progress(Protocol):
    def start(self, items: int, amount: int) -> None:
        """The whole job: how many items (files, chunks) and how much of them (bytes, events)."""

    def advance(self, items: int, amount: int) -> None:
        """Increments since the last call."""

    def grow(self, items: int, amount: int) -> None:
        """The job grew (``process`` learns a file's chunks while the first ones already run)."""

    def stop(self) -> None: ...


class NoProgress:
    def start(self, items: int, amount: int) -> None:
        pass

    def advance(self, items: int, amount: int) -> None:
        pass

    def grow(self, items: int, amount: int) -> None:
        pass

    def stop(self) -> None:
        pass


NO_PROGRESS: Progress = NoProgress()
