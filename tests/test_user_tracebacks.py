"""A user's function that fails on a worker shows the user's own frames: file, line and source line, whichever
way the function was written (a module file, a notebook cell, a lambda) and whatever cloudpickle does to the
file names of code it sends by value. The function runs as process() sends it: cloudpickled, then run_chunk."""

from __future__ import annotations

import json
import linecache
import sys
import uuid

import awkward as ak
import cloudpickle
import pytest

from datalake import cli, tracebacks
from datalake.errors import UserCodeError
from datalake.processing import userfn
from datalake.processing.chunks import Chunk
from datalake.processing.placement import Placed, Source
from datalake.processing.process import run_chunk
from datalake.testbed import nanoaod
from datalake.tracebacks import Frame

MODULE_CODE = """\
import awkward as ak


def helper(n):
    return n // 0


def spectrum(events):
    return helper(len(events))


def library_error(events):
    return ak.num(events.nMuon, axis=3)
"""

CELL_CODE = """\
def cell_fn(events):
    scale = 0
    return len(events) / scale
"""


@pytest.fixture(scope="module")
def nano(tmp_path_factory):
    return nanoaod.write(tmp_path_factory.mktemp("nano") / "nano.root", 1000, seed=3)


@pytest.fixture
def module_file(tmp_path):
    path = tmp_path / f"ana_{uuid.uuid4().hex[:8]}.py"
    path.write_text(MODULE_CODE)
    yield path
    module = sys.modules.pop(f"datalake_user_{path.stem}", None)
    if module is not None and module.__name__ in cloudpickle.cloudpickle._PICKLE_BY_VALUE_MODULES:
        cloudpickle.unregister_pickle_by_value(module)


def fail_on_worker(fn, nano) -> tuple[Frame, ...]:
    """Run ``fn`` as a worker does and return the frames the client ends with."""
    placed = Placed(Chunk("collider:nano.root", 0, 100), (Source("LOCAL", "A", str(nano)),), "A")
    with pytest.raises(Exception) as err:  # cluster.FunctionFailed
        run_chunk(placed, cloudpickle.dumps(fn), "Events", ["nMuon"], 30)
    return tracebacks.resolve(err.value.frames, fn)


def test_a_function_from_a_module_file_shows_its_file_lines_and_source(module_file, nano):
    """Both frames of the user's file (the function and the helper it calls), none of datalake's."""
    fn = userfn.load(f"{module_file}:spectrum")  # sent by value: the workers do not have the file
    frames = fail_on_worker(fn, nano)
    assert [(f.file, f.line, f.function, f.code) for f in frames] == [
        (str(module_file), 9, "spectrum", "return helper(len(events))"),
        (str(module_file), 5, "helper", "return n // 0"),
    ]
    assert tracebacks.render(frames) == (
        "Traceback of your function (most recent call last):\n"
        f'  File "{module_file}", line 9, in spectrum\n    return helper(len(events))\n'
        f'  File "{module_file}", line 5, in helper\n    return n // 0'
    )


def test_a_function_from_a_notebook_cell_shows_the_cell_and_its_source(nano):
    """A cell is code compiled from a string; IPython keeps its text in linecache, under the cell's name."""
    name = f"<ipython-input-{uuid.uuid4().int % 1000}-{uuid.uuid4().hex[:12]}>"
    linecache.cache[name] = (len(CELL_CODE), None, CELL_CODE.splitlines(True), name)  # as IPython does
    namespace = {"__name__": "__main__"}
    exec(compile(CELL_CODE, name, "exec"), namespace)
    try:
        frames = fail_on_worker(namespace["cell_fn"], nano)
    finally:
        linecache.cache.pop(name, None)
    assert [(f.file, f.line, f.function, f.code) for f in frames] == [
        (name, 3, "cell_fn", "return len(events) / scale")
    ]


def test_a_lambda_shows_the_line_it_was_written_on(nano):
    fn = lambda events: len(events) // 0  # noqa: E731 - the case under test
    frames = fail_on_worker(fn, nano)
    name = "test_a_lambda_shows_the_line_it_was_written_on.<locals>.<lambda>"
    line = "fn = lambda events: len(events) // 0  # noqa: E731 - the case under test"
    assert [(f.file, f.function, f.code) for f in frames] == [(__file__, name, line)]


def test_library_frames_below_the_users_last_frame_are_counted_not_shown(module_file, nano, monkeypatch):
    monkeypatch.delenv("DATALAKE_DEBUG", raising=False)
    fn = userfn.load(f"{module_file}:library_error")
    frames = fail_on_worker(fn, nano)
    assert len(frames) > 2 and "awkward" in frames[-1].file  # the error rose inside awkward
    kept, hidden = tracebacks.shown(frames)
    assert [f.function for f in kept] == ["library_error"] and hidden == len(frames) - 1
    assert f"... {hidden} more frames inside libraries" in tracebacks.render(frames)
    monkeypatch.setenv("DATALAKE_DEBUG", "1")
    assert tracebacks.shown(frames) == (frames, 0)


def test_the_cli_shows_the_frames_under_the_one_line_error_and_in_json(capsys):
    frames = (
        Frame("/home/me/ana.py", 9, "spectrum", "return helper(len(events))"),
        Frame("/home/me/ana.py", 5, "helper", "return n // 0"),
    )
    err = tracebacks.attach(UserCodeError("s:f[0:10]: ZeroDivisionError: integer division or modulo by zero"), frames)
    with pytest.raises(SystemExit) as exit_:
        cli.fail(str(err), err.exit_code, err, as_json=True)
    out, errors = capsys.readouterr()
    assert exit_.value.code == 1
    assert errors.splitlines() == [
        "datalake: error: s:f[0:10]: ZeroDivisionError: integer division or modulo by zero",
        "Traceback of your function (most recent call last):",
        '  File "/home/me/ana.py", line 9, in spectrum',
        "    return helper(len(events))",
        '  File "/home/me/ana.py", line 5, in helper',
        "    return n // 0",
    ]
    error = json.loads(out)["error"]
    assert (error["message"], error["exit_code"]) == (str(err), 1)
    assert error["traceback"] == [
        {"file": "/home/me/ana.py", "line": 9, "function": "spectrum", "code": "return helper(len(events))"},
        {"file": "/home/me/ana.py", "line": 5, "function": "helper", "code": "return n // 0"},
    ]


def test_an_error_without_frames_stays_one_line(capsys):
    with pytest.raises(SystemExit):
        cli.fail("not allowed: analyst may not read s:d", 3)
    assert capsys.readouterr().err.splitlines() == ["datalake: error: not allowed: analyst may not read s:d"]


def test_frames_survive_pickling_as_dask_sends_them():
    frame = Frame("<dynamic-code>", 3, "fn", "", 1)
    assert cloudpickle.loads(cloudpickle.dumps(frame)) == frame


def test_a_where_expression_failing_on_the_events_names_the_expression_and_the_chunk():
    from datalake.errors import ConfigError
    from datalake.processing import cluster
    from datalake.processing.deliver import _selected
    from datalake.processing.selection import parse

    events = {"Muon_pt": ak.Array([[1.0, 2.0], [3.0]]), "Jet_pt": ak.Array([[1.0], [2.0, 3.0]])}
    placed = Placed(Chunk("collider:nano.root", 0, 2), (Source("LOCAL", "A", "x.root"),), "A")
    with pytest.raises(cluster.FunctionFailed) as err:
        _selected(parse("any(Muon_pt > Jet_pt)"), events, placed)  # lists of different lengths
    assert err.value.where == "collider:nano.root[0:2]"
    assert err.value.message.startswith("--where 'any(Muon_pt > Jet_pt)': ValueError: ")
    with pytest.raises(ConfigError, match="must give one true/false per event"):  # bad input stays bad input
        _selected(parse("Muon_pt > 1"), events, placed)


def test_library_frames_are_known_by_their_install_location_on_any_machine(monkeypatch):
    monkeypatch.delenv("DATALAKE_DEBUG", raising=False)
    frames = (
        Frame("/home/me/ana.py", 3, "fn", "ak.num(x, axis=3)"),
        Frame("/opt/conda/lib/python3.11/site-packages/awkward/operations/ak_num.py", 80, "num"),  # a worker's
        Frame("/usr/lib/python3/dist-packages/numpy/core/fromnumeric.py", 10, "sum"),
    )
    assert tracebacks.shown(frames) == (frames[:1], 2)


def test_a_json_run_prints_one_document_its_result_or_else_the_error(capsys):
    """A summary printed before the failure (pull with failed files) stays the only JSON on stdout; an error
    message with undecodable bytes of an argument is escaped, never a crash."""
    from datalake.cli.output import console

    console.print_json('{"files": 4, "failed": 2}')
    with pytest.raises(SystemExit):
        cli.fail("2 of 4 files could not be pulled (listed above)", 1, as_json=True)
    assert json.loads(capsys.readouterr().out) == {"files": 4, "failed": 2}
    console.printed_json = False  # as main() starts every run
    with pytest.raises(SystemExit):
        cli.fail("no such file: b\udcffd", 2, as_json=True)
    assert json.loads(capsys.readouterr().out) == {"error": {"message": "no such file: b\udcffd", "exit_code": 2}}
