"""Durable transfer state in SQLite: a job is on disk (fsynced) before its id is returned, and a service killed at
any moment finds every job again when it restarts.

One connection per thread, WAL journal, ``synchronous=FULL``. Files that were in flight when the service died
come back as ``recheck``: the engine looks at their destination before copying anything again, so nothing that
was copied and verified is copied twice.
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from datalake.transfer.model import ACTIVE, CANCELED, SUBMITTED, TERMINAL, FileSpec, JobSpec, job_state

RECHECK = "RECHECK"  # internal: was ACTIVE when the service stopped; shown to clients as ACTIVE

SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    job_id TEXT PRIMARY KEY,
    submitted REAL NOT NULL,
    account TEXT NOT NULL,
    priority INTEGER NOT NULL,
    verify_checksum TEXT NOT NULL,
    overwrite INTEGER NOT NULL,
    retry INTEGER NOT NULL,
    job_metadata TEXT NOT NULL,
    cancelled INTEGER NOT NULL DEFAULT 0,
    finished REAL
);
CREATE TABLE IF NOT EXISTS files (
    file_id INTEGER PRIMARY KEY AUTOINCREMENT,
    job_id TEXT NOT NULL REFERENCES jobs(job_id),
    sources TEXT NOT NULL,
    destination TEXT NOT NULL,
    filesize INTEGER,
    checksum TEXT,
    metadata TEXT NOT NULL,
    activity TEXT NOT NULL,
    link TEXT NOT NULL,
    state TEXT NOT NULL,
    reason TEXT NOT NULL DEFAULT '',
    attempts INTEGER NOT NULL DEFAULT 0,
    next_try REAL NOT NULL DEFAULT 0,
    source_used TEXT,
    start_time REAL,
    finish_time REAL,
    transferred INTEGER NOT NULL DEFAULT 0,
    tokens TEXT
);
CREATE TABLE IF NOT EXISTS service (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS files_by_state ON files(state, next_try);
CREATE INDEX IF NOT EXISTS files_by_job ON files(job_id);
"""


@dataclass(frozen=True)
class FileRow:
    file_id: int
    job_id: str
    spec: FileSpec
    state: str
    reason: str
    attempts: int
    source_used: str | None
    start_time: float | None
    finish_time: float | None
    transferred: int
    verify_checksum: str
    overwrite: bool
    retry: int
    priority: int


class DuplicateJob(Exception):
    """A job with this id exists already (a deterministic id submitted twice)."""


class Store:
    def __init__(self, path: str | Path) -> None:
        self.path = str(path)
        self._local = threading.local()
        if self.path != ":memory:":  # it holds the files' storage tokens until they are done: private
            os.close(os.open(self.path, os.O_WRONLY | os.O_CREAT, 0o600))
            os.chmod(self.path, 0o600)
        self._db().executescript(SCHEMA)
        columns = {r["name"] for r in self._db().execute("PRAGMA table_info(files)")}
        if "tokens" not in columns:  # a database from before per-file tokens
            self._db().execute("ALTER TABLE files ADD COLUMN tokens TEXT")
        with self._tx() as db:
            # in flight when the last service stopped: look at the destination before anything else
            db.execute("UPDATE files SET state = ? WHERE state = ?", (RECHECK, ACTIVE))

    def _db(self) -> sqlite3.Connection:
        db = getattr(self._local, "db", None)
        if db is None:
            db = sqlite3.connect(self.path, timeout=30, isolation_level=None, check_same_thread=True)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=FULL")
            db.row_factory = sqlite3.Row
            self._local.db = db
        return db

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        db = self._db()
        db.execute("BEGIN IMMEDIATE")
        try:
            yield db
        except BaseException:
            db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")

    # -- jobs ------------------------------------------------------------------------------------------------

    def base_id(self) -> str:
        """This service's identity for deterministic job ids: made once, kept with the jobs."""
        with self._tx() as db:
            row = db.execute("SELECT value FROM service WHERE key = 'base_id'").fetchone()
            if row:
                return row["value"]
            value = str(uuid.uuid4())
            db.execute("INSERT INTO service (key, value) VALUES ('base_id', ?)", (value,))
            return value

    def submit(self, job: JobSpec, account: str, job_id: str | None = None) -> str:
        """Store a job and its files in one transaction; the id is only returned once it is on disk."""
        job_id = job_id or str(uuid.uuid4())
        with self._tx() as db:
            if db.execute("SELECT 1 FROM jobs WHERE job_id = ?", (job_id,)).fetchone():
                raise DuplicateJob(job_id)
            db.execute(
                "INSERT INTO jobs (job_id, submitted, account, priority, verify_checksum, overwrite, retry, "
                "job_metadata) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    job_id,
                    time.time(),
                    account,
                    job.priority,
                    job.verify_checksum,
                    int(job.overwrite),
                    job.retry,
                    json.dumps(job.job_metadata),
                ),
            )
            db.executemany(
                "INSERT INTO files (job_id, sources, destination, filesize, checksum, metadata, activity, link, state,"
                " tokens) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [
                    (
                        job_id,
                        json.dumps(list(f.sources)),
                        f.destination,
                        f.filesize,
                        f.checksum,
                        json.dumps(f.metadata),
                        f.activity,
                        f.link(),
                        SUBMITTED,
                        json.dumps(f.tokens) if f.tokens else None,
                    )
                    for f in job.files
                ],
            )
        return job_id

    def job(self, job_id: str) -> dict[str, Any] | None:
        """The job and its files, or None."""
        db = self._db()
        job = db.execute("SELECT * FROM jobs WHERE job_id = ?", (job_id,)).fetchone()
        if job is None:
            return None
        rows = db.execute("SELECT * FROM files WHERE job_id = ? ORDER BY file_id", (job_id,)).fetchall()
        files = [replace(f, state=ACTIVE) if f.state == RECHECK else f for f in (self._row(r, job) for r in rows)]
        meta = {**dict(job), "job_metadata": json.loads(job["job_metadata"])}
        return {"job": meta, "files": files, "state": job_state([f.state for f in files], bool(job["cancelled"]))}

    def recent(self, accounts: list[str], limit: int) -> list[str]:
        """Ids of the newest jobs (of ``accounts`` only, if any are named), newest first."""
        where = f"WHERE account IN ({','.join('?' * len(accounts))})" if accounts else ""
        sql = f"SELECT job_id FROM jobs {where} ORDER BY submitted DESC LIMIT ?"
        return [row["job_id"] for row in self._db().execute(sql, (*accounts, limit)).fetchall()]

    def cancel(self, job_id: str) -> bool:
        """Cancel what has not started; returns False if the job does not exist."""
        with self._tx() as db:
            if db.execute("SELECT 1 FROM jobs WHERE job_id = ?", (job_id,)).fetchone() is None:
                return False
            db.execute("UPDATE jobs SET cancelled = 1 WHERE job_id = ?", (job_id,))
            db.execute(
                "UPDATE files SET state = ?, reason = 'cancelled by the submitter', finish_time = ?, tokens = NULL "
                "WHERE job_id = ? AND state = ?",
                (CANCELED, time.time(), job_id, SUBMITTED),
            )
        return True

    def cancel_files(self, job_id: str, file_ids: list[int]) -> dict[int, str]:
        """Cancel those of the job's files that have not started; returns each named file's state after (a file
        not of this job is absent)."""
        with self._tx() as db:
            for file_id in file_ids:
                changed = db.execute(
                    "UPDATE files SET state = ?, reason = 'cancelled by the submitter', finish_time = ?, tokens = NULL "
                    "WHERE job_id = ? AND file_id = ? AND state = ?",
                    (CANCELED, time.time(), job_id, file_id, SUBMITTED),
                ).rowcount
                if changed:
                    self._close_job(db, file_id)
            marks = ",".join("?" * len(file_ids))
            rows = db.execute(
                f"SELECT file_id, state FROM files WHERE job_id = ? AND file_id IN ({marks})", (job_id, *file_ids)
            ).fetchall()
        return {row["file_id"]: row["state"] for row in rows}

    def cancelled(self, job_id: str) -> bool:
        row = self._db().execute("SELECT cancelled FROM jobs WHERE job_id = ?", (job_id,)).fetchone()
        return bool(row and row["cancelled"])

    def set_priority(self, job_id: str, priority: int) -> bool:
        with self._tx() as db:
            return db.execute("UPDATE jobs SET priority = ? WHERE job_id = ?", (priority, job_id)).rowcount > 0

    # -- the engine's side -----------------------------------------------------------------------------------

    def claim(self, slots: Callable[[str], int], limit: int) -> list[FileRow]:
        """Mark up to ``limit`` due files ACTIVE (or take RECHECK ones) and return them: highest job priority
        first, then oldest, never more per link than ``slots(link)`` allows.

        The choice is read outside the write lock, over ids only: a file's row carries kilobytes of sources and
        tokens, and sorting 2,000 queued rows with them took 60 ms, during which no transfer could finish. This
        engine is the only one to claim; a file cancelled meanwhile is left alone by the guarded update."""
        now = time.time()
        # the first ``limit`` due files of EACH link: one busy link cannot hide the others' files
        candidates = (
            self._db()
            .execute(
                "SELECT file_id, link, state FROM (SELECT f.file_id, f.link, f.state, j.priority, ROW_NUMBER() OVER "
                "(PARTITION BY f.link ORDER BY f.state = ? DESC, j.priority DESC, f.file_id) AS place "
                "FROM files f JOIN jobs j USING (job_id) WHERE (f.state = ? AND f.next_try <= ?) OR f.state = ?) "
                "WHERE place <= ? ORDER BY state = ? DESC, priority DESC, file_id",
                (RECHECK, SUBMITTED, now, RECHECK, max(limit, 1), RECHECK),
            )
            .fetchall()
        )
        chosen: list[tuple[int, str]] = []
        taken: dict[str, int] = {}
        for r in candidates:
            if len(chosen) >= limit:
                break
            if slots(r["link"]) - taken.get(r["link"], 0) <= 0 and r["state"] != RECHECK:
                continue
            taken[r["link"]] = taken.get(r["link"], 0) + 1
            chosen.append((r["file_id"], r["state"]))
        out: list[FileRow] = []
        with self._tx() as db:
            for file_id, state in chosen:
                changed = db.execute(
                    "UPDATE files SET state = ?, start_time = COALESCE(start_time, ?), attempts = attempts + "
                    "(? = ?) WHERE file_id = ? AND state = ?",
                    (ACTIVE, now, state, SUBMITTED, file_id, state),
                ).rowcount
                if not changed:
                    continue
                r = db.execute(
                    "SELECT f.*, j.priority, j.verify_checksum, j.overwrite, j.retry FROM files f JOIN jobs j "
                    "USING (job_id) WHERE f.file_id = ?",
                    (file_id,),
                ).fetchone()
                row = self._row(r, r, recheck=state == RECHECK)
                out.append(row if state == RECHECK else replace(row, state=SUBMITTED))  # as it was when chosen
        return out

    def finish(self, file_id: int, state: str, reason: str = "", source: str | None = None, size: int = 0) -> None:
        assert state in TERMINAL
        with self._tx() as db:
            db.execute(
                "UPDATE files SET state = ?, reason = ?, source_used = ?, finish_time = ?, transferred = ?, "
                "tokens = NULL WHERE file_id = ?",  # a done file's tokens are of no more use to anyone
                (state, reason, source, time.time(), size, file_id),
            )
            self._close_job(db, file_id)

    def again(self, file_id: int, reason: str, delay: float) -> None:
        """Back to the queue after a recoverable error, not before ``delay`` seconds."""
        with self._tx() as db:
            db.execute(
                "UPDATE files SET state = ?, reason = ?, next_try = ? WHERE file_id = ?",
                (SUBMITTED, reason, time.time() + delay, file_id),
            )

    def release(self, file_id: int) -> None:
        """A claimed file that never started (the service stopped first): queued again, the attempt not counted."""
        with self._tx() as db:
            db.execute(
                "UPDATE files SET state = ?, attempts = MAX(attempts - 1, 0) WHERE file_id = ? AND state = ?",
                (SUBMITTED, file_id, ACTIVE),
            )

    def counts(self) -> dict[str, dict[str, int]]:
        """Per link: files per state (for metrics and ``transfer status``)."""
        out: dict[str, dict[str, int]] = {}
        for r in self._db().execute("SELECT link, state, COUNT(*) AS n FROM files GROUP BY link, state"):
            out.setdefault(r["link"], {})[ACTIVE if r["state"] == RECHECK else r["state"]] = r["n"]
        return out

    def _close_job(self, db: sqlite3.Connection, file_id: int) -> None:
        job_id = db.execute("SELECT job_id FROM files WHERE file_id = ?", (file_id,)).fetchone()["job_id"]
        left = db.execute(
            "SELECT COUNT(*) FROM files WHERE job_id = ? AND state NOT IN (?, ?, ?)", (job_id, *sorted(TERMINAL))
        ).fetchone()[0]
        if left == 0:
            db.execute("UPDATE jobs SET finished = ? WHERE job_id = ?", (time.time(), job_id))

    @staticmethod
    def _row(r: sqlite3.Row, job: sqlite3.Row, recheck: bool = False) -> FileRow:
        spec = FileSpec(
            sources=tuple(json.loads(r["sources"])),
            destination=r["destination"],
            filesize=r["filesize"],
            checksum=r["checksum"],
            metadata=json.loads(r["metadata"]),
            activity=r["activity"],
            tokens=json.loads(r["tokens"]) if r["tokens"] else {},
        )
        return FileRow(
            file_id=r["file_id"],
            job_id=r["job_id"],
            spec=spec,
            state=RECHECK if recheck else r["state"],
            reason=r["reason"],
            attempts=r["attempts"],
            source_used=r["source_used"],
            start_time=r["start_time"],
            finish_time=r["finish_time"],
            transferred=r["transferred"],
            verify_checksum=job["verify_checksum"],
            overwrite=bool(job["overwrite"]),
            retry=job["retry"],
            priority=job["priority"],
        )
