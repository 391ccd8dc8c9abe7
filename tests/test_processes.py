"""The supervisor: PID records guard against PID reuse, stop() signals only our process."""

from __future__ import annotations

import json
import socket
import sys

from datalake.testbed.credentials import load_or_create
from datalake.testbed.processes import Launch, PidRecord, port_in_use, python_environment, spawn, stop, wait_until


def test_spawn_record_and_stop(tmp_path):
    record = spawn(
        Launch(argv=[sys.executable, "-c", "import time; print('hi', flush=True); time.sleep(60)"]), tmp_path / "log"
    )
    record.save(tmp_path / "p.json")
    loaded = PidRecord.load(tmp_path / "p.json")
    assert loaded == record and loaded.alive()
    wait_until(lambda: (tmp_path / "log").read_text() == "hi\n", 10, "child")
    stop(loaded)
    assert not loaded.alive()


def test_a_reused_pid_is_not_ours(tmp_path):
    record = spawn(Launch(argv=[sys.executable, "-c", "import time; time.sleep(60)"]), tmp_path / "log")
    impostor = PidRecord(pid=record.pid, ticks=record.ticks - 100, boot=record.boot, argv=record.argv)
    other_boot = PidRecord(pid=record.pid, ticks=record.ticks, boot="another-boot", argv=record.argv)
    for stranger in (impostor, other_boot):
        assert not stranger.alive()
        stop(stranger)  # must not signal a process that only shares the PID
    assert record.alive()
    stop(record)


def test_servers_logs_are_private(tmp_path):
    record = spawn(Launch(argv=["true"]), tmp_path / "server.log")
    assert oct((tmp_path / "server.log").stat().st_mode & 0o777) == "0o600"
    stop(record)


def test_unreadable_records_are_absent(tmp_path):
    (tmp_path / "bad.json").write_text("{not json")
    assert PidRecord.load(tmp_path / "bad.json") is None
    assert PidRecord.load(tmp_path / "missing.json") is None


def test_port_in_use_sees_listeners():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        assert port_in_use(port)
    assert not port_in_use(port)


def test_passwords_are_random_private_and_stable(tmp_path):
    first = load_or_create(tmp_path / "secrets.json")
    assert load_or_create(tmp_path / "secrets.json") == first
    assert len(set(first.values())) == len(first)
    assert oct((tmp_path / "secrets.json").stat().st_mode & 0o777) == "0o600"
    assert load_or_create(tmp_path / "other.json") != first


def test_a_server_from_this_venv_records_its_environment_and_older_records_still_load(tmp_path):
    ours = spawn(Launch(argv=[sys.executable, "-c", "import time; time.sleep(60)"]), tmp_path / "log")
    other = spawn(Launch(argv=["/bin/sleep", "60"]), tmp_path / "log")
    try:
        assert ours.environment == python_environment() != "" and other.environment == ""
        old = {"pid": ours.pid, "ticks": ours.ticks, "boot": ours.boot, "argv": ours.argv}  # before the field
        (tmp_path / "old.json").write_text(json.dumps(old))
        assert PidRecord.load(tmp_path / "old.json") == PidRecord(**old, environment="")
    finally:
        stop(ours)
        stop(other)
