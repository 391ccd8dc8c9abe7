"""One progress display for every command that moves files: a bytes bar and a files bar, with rate and ETA, on
stderr; silent when stderr is not a terminal (scripts, CI, ``--json`` piped into ``jq``)."""

from __future__ import annotations

from rich.progress import (
    BarColumn,
    DownloadColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)

from datalake.cli.output import err_console


class FilesAndBytes:
    """Implements the ``Progress`` protocol of ``register`` and ``pull`` (start / advance / stop)."""

    def __init__(self, bytes_label: str = "bytes", files_label: str = "files") -> None:
        self.labels = (bytes_label, files_label)
        self.bar = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            DownloadColumn(),
            TransferSpeedColumn(),
            TimeRemainingColumn(),
            console=err_console,
            disable=not err_console.is_terminal,
        )
        self.files = self.bytes = None

    def start(self, files: int, size: int) -> None:
        self.bar.start()
        self.bytes = self.bar.add_task(self.labels[0], total=size or 1, completed=0 if size else 1)
        self.files = self.bar.add_task(self.labels[1], total=files or 1, completed=0 if files else 1)

    def advance(self, files: int, size: int) -> None:
        if size:
            self.bar.advance(self.bytes, size)
        if files:
            self.bar.advance(self.files, files)

    def grow(self, files: int, size: int) -> None:
        totals = {t.id: t.total or 0 for t in self.bar.tasks}
        for task, more in ((self.bytes, size), (self.files, files)):
            self.bar.update(task, total=totals[task] + more)

    def stop(self) -> None:
        self.bar.stop()
