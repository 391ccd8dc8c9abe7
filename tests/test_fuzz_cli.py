"""Fuzzing the ``datalake`` command line: random and malformed options and values for every sub-command, in-process
(``datalake.cli.main``, as the console script calls it) against a Rucio config whose server does not exist. Every
case ends, in bounded time, in a usage error (exit 2, typer's message), one ``datalake: error: ...`` line with
exit 1-3, or a real success; never a traceback or an "internal error" (exit 70). A few cases run the real
executable, for what only a process shows: command-line bytes that are not UTF-8, and Dask clients.
Cases: 13 commands x max_examples 60 = 780 generated, 5 in subprocesses, 11 fixed regressions."""

from __future__ import annotations

import contextlib
import copy
import io
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, Phase, event, given, settings
from hypothesis import strategies as st
from time_limits import Hang, time_limit

from datalake.cli import main

ROOT = Path(__file__).resolve().parent.parent
POLICY = ROOT / "policies" / "darkmatter-closed.yaml"
DATALAKE = str(Path(sys.executable).parent / "datalake")
LIMIT = 30  # seconds for one command: every case takes well under one, also on a busy machine; a hang
PHASES = [Phase.explicit, Phase.reuse, Phase.generate, Phase.shrink]  # no tracer re-runs of failing cases
PREFIX = "datalake: error: "


class WouldStart(BaseException):
    """Raised instead of serving or starting a Dask worker: a valid ``transfer serve``/``worker`` line."""


@dataclass
class Result:
    argv: list[str]
    code: int | None  # None: it got as far as serving / starting a worker
    out: str
    err: str

    def __str__(self) -> str:
        return f"argv={self.argv!r} exit={self.code}\nstdout: {self.out[-600:]}\nstderr: {self.err[-1200:]}"


def run(argv: list[str]) -> Result:
    """``main(argv)`` with stdout and stderr encoded as a real process's are in a UTF-8 locale (stdout strict,
    stderr backslashreplace), an empty stdin, and the environment put back afterwards."""
    out = io.TextIOWrapper(io.BytesIO(), encoding="utf-8", errors="strict")
    err = io.TextIOWrapper(io.BytesIO(), encoding="utf-8", errors="backslashreplace")
    environ = dict(os.environ)
    code: int | None = 0
    try:
        with (
            contextlib.redirect_stdout(out),
            contextlib.redirect_stderr(err),
            pytest.MonkeyPatch.context() as patch,
            time_limit(LIMIT),
        ):
            patch.setattr(sys, "stdin", io.StringIO(""))
            try:
                main(argv)
            except SystemExit as exit_:
                code = exit_.code if isinstance(exit_.code, int) else 1
            except WouldStart:
                code = None
    except Hang as hang:
        raise AssertionError(f"{hang}: {argv!r}") from None
    finally:
        os.environ.clear()
        os.environ.update(environ)
    out.flush()
    err.flush()
    return Result(argv, code, out.buffer.getvalue().decode(), err.buffer.getvalue().decode())  # type: ignore[attr-defined]


def assert_clear(result: Result, listing: bool = False) -> str:
    """The contract; returns the kind of ending. ``listing``: commands that print one line per problem first."""
    text = result.out + result.err
    assert "Traceback" not in text, result
    if result.code is None:
        return "started"
    assert result.code != 70, result  # "internal error": an exception nobody turned into a message
    lines = result.err.strip().splitlines()
    if result.code == 0:
        assert not any(line.startswith(PREFIX) for line in lines), result
        return "ok"
    assert result.code in (1, 2, 3), result
    if lines and lines[-1].startswith(PREFIX):
        assert len(lines[-1]) > len(PREFIX) + 5, result
        assert listing or len(lines) == 1, result
        return f"error {result.code}"
    # a usage error, reported by typer (click): exit 2 and a framed "Error" with a message inside
    assert result.code == 2 and any("Error" in line for line in lines), result
    inside = [line.strip("│ ") for line in lines if line.startswith("│")]
    assert any(inside), result
    return "usage"


# -- the values: what a user may mistype, and worse ------------------------------------------------------------

ARGV_TEXT = st.text(st.characters(blacklist_characters="\x00", blacklist_categories=("Cs",)), max_size=30)
UNDECODABLE = ["\udcff", "a\udcfeb", "\udce9t\udce9"]  # how Python shows command-line bytes that are not UTF-8
NASTY = ["", " ", "-", "--", "-1", "x" * 5000, "é☃", "a\nb", "\t", "\x1b[31mred", "$HOME", "*", "'", "%s", *UNDECODABLE]
TEXT = st.one_of(ARGV_TEXT, st.sampled_from(NASTY))
DIDS = st.one_of(
    st.sampled_from(
        [
            "",
            ":",
            "::",
            "a:b:c",
            "a:",
            ":b",
            "a",
            "a:b\n",
            "a\n:b",
            " a:b",
            "a:.b",
            "a:-b",
            "a:b c",
            "s" * 26 + ":n",
            "s:" + "n" * 251,
            "é:ü",
            "\udcff:x",
            "a:b/../c",
            "a:b\x1b[31m",
            "mc:smile:",
            "a:b" * 1000,
            "darkmatter:raw.1",
            "mc:x",
        ]
    ),
    ARGV_TEXT,
)
INTS = st.one_of(
    st.sampled_from(["-1", "0", "1", "257", "99999999999999999999999", "1e3", "abc", "", " 5", "0x10", "٣", "nan"]),
    st.integers().map(str),
)
DATES = st.one_of(
    st.sampled_from(
        [
            "",
            "now",
            "2020-13-01",
            "2020-02-30",
            "9999-12-31",
            "0001-01-01",
            "2020-01-01T25:00:00",
            "2020-01-01 00:00:00",
            "1e9",
            "-1",
        ]
    ),
    ARGV_TEXT,
)
META = st.one_of(
    st.sampled_from(
        [
            "",
            "=",
            "=v",
            "k",
            "k=",
            " =x",
            "title=x",
            "creators=a; b",
            "creators=;",
            "publication_year=abc",
            "publication_year=99999999999999999999999",
            "run_end=2012-13-45",
            "x" * 5000 + "=1",
            "é=ü",
            "k==v",
            "doi=10.5072/x",
            "doi=nope",
            "data_level=9",
            "resource_type=Nope",
            "title=\udcff",
            "title=a\nb",
        ]
    ),
    st.tuples(ARGV_TEXT, ARGV_TEXT).map("=".join),
)
WHERE = st.one_of(
    st.sampled_from(
        [
            "",
            " ",
            "x >",
            "nMuon >= 2 and max(Muon_pt) > 25",
            "__import__('os').system('true')",
            "(lambda: 1)()",
            "a.b",
            "a[0]",
            "f(x)",
            "max()",
            "max(x, y)",
            "max",
            "1 if x else 2",
            "'s' == x",
            "x" * 10_000,
            "(" * 500 + "x" + ")" * 500,
            "not " * 50_000 + "x",
            "1" + "+1" * 50_000,
            "-" * 50_000 + "x",
            "10**10**10 > x",
            "x > 2**0.5",
            "x\udcff > 1",
            "x\n> 1",
            "[x]",
            "{x}",
            "x := 1",
            "await x",
            "yield x",
            "*x",
            "x if",
        ]
    ),
    ARGV_TEXT,
)
URLS = st.sampled_from(
    [
        "",
        "http://127.0.0.1:9",
        "https://127.0.0.1:9",
        "http://localhost:9",
        "ftp://x",
        "http://[::1",
        "not a url",
        "http://",
        "127.0.0.1:9",
        "http://127.0.0.1:99999",
        "http://127.0.0.1:9/" + "x" * 5000,
        "http://\udcff:9",
        "http://127.0.0.1:9\n",
        "http://user:pass@127.0.0.1:9",
    ]
)
TOKENS = st.one_of(st.sampled_from(["ok-token", "ü€", "a b", "a\nb", "\udcff", "Bearer x"]), ARGV_TEXT)
LEVELS = st.sampled_from(["DEBUG", "debug", "TRACE", "", "INFO ", "ERROR"])
EXTRA = st.one_of(
    st.sampled_from(["--nosuch", "-z", "--", "--json=1", "---", "-", "--dry-run=yes", "-jj", "--to", "--all"]),
    ARGV_TEXT.map(lambda t: "--" + t),
    TEXT,
)


def paths(names: list[str]) -> st.SearchStrategy[str]:
    """Curated absolute paths (nothing random outside the scratch directory) and anything relative."""
    fixed = [
        "",
        ".",
        "..",
        "/",
        "/nonexistent/x",
        "/dev/null",
        "/dev/null/x",
        "/proc/self/nonexistent",
        "x" * 5000,
        "a\nb",
        "é☃",
        "\udcff",
        "~",
        "~nosuchuser/x",
        *names,
    ]
    relative = ARGV_TEXT.filter(lambda t: not t.startswith(("/", "~", "-")) and ".." not in t)
    return st.one_of(st.sampled_from(fixed), relative)


# files in the scratch directory (the working directory while the fuzz runs), made by the `offline` fixture
FILES = {
    "f.root": b"x",
    "data/a.root": b"y",
    "bad-policy.yaml": b"name: [unclosed\n",
    "latin1-policy.yaml": b"name: caf\xe9\n",
    "laughs-policy.yaml": b"a: &a [x,x,x,x,x,x,x,x,x]\n"
    + b"".join(b"%c: &%c [%s]\n" % (98 + i, 98 + i, b",".join([b"*%c" % (97 + i)] * 9)) for i in range(8))
    + b"name: *i\n",
    "meta-list.yaml": b"- a\n- b\n",
    "meta-bad.yaml": b"a: [\n",
    "meta-latin1.yaml": b"title: caf\xe9\n",
    "meta-date.yaml": b"run_end: 2012-02-30\n",
    "meta-ok.yaml": b"title: x\ncreators: [a]\n",
    "files-from.txt": b"nonexistent.root\n# comment\n\n",
    "files-from-latin1.txt": b"caf\xe9.root\n",
    "svc-bad.yaml": b"port: [1\n",
    "svc-date.yaml": b"port: 2027-02-30\n",
    "svc-latin1.yaml": b"host: caf\xe9\n",
    "svc-list.yaml": b"- 1\n",
    "svc-unknown.yaml": b"prot: 1\n",
    "svc-types.yaml": b"port: many\nthreads: -1\n",
    "svc-tls.yaml": b"tls: {cert: nope.pem, key: nope.pem}\n",
    "svc-tokens.yaml": b"tokens: {rucio: plain}\n",
    "analysis.py": b"BRANCHES = ['Muon_pt']\n\ndef fn(events):\n    return 1\n",
    "broken.py": b"raise RuntimeError('boom at import')\n",
    "syntax.py": b"def fn(:\n",
}
POLICY_PATHS = paths(
    [
        str(POLICY),
        str(ROOT / "policies"),
        "bad-policy.yaml",
        "latin1-policy.yaml",
        "laughs-policy.yaml",
        "meta-ok.yaml",
        "data",
        "f.root",
    ]
)
META_FILES = paths(["meta-list.yaml", "meta-bad.yaml", "meta-latin1.yaml", "meta-date.yaml", "meta-ok.yaml", "data"])
FILES_FROM = paths(["-", "files-from.txt", "files-from-latin1.txt", "data", "f.root"])
SERVICE_CONFIGS = paths([name for name in FILES if name.startswith("svc-")] + ["data", "f.root", "analysis.py"])
FUNCTIONS = st.one_of(
    st.sampled_from(
        [
            "",
            ":",
            "json",
            "json:",
            ":dumps",
            "json:nosuch",
            "json:dumps",
            "json:JSONDecodeError.x",
            "zz_nosuch_mod:f",
            "analysis:fn",
            "analysis:nosuch",
            "analysis.py:fn",
            "broken.py:fn",
            "syntax.py:fn",
            "broken:fn",
            "data:fn",
            "nosuch.py:fn",
            "/dev/null:fn",
            "f.root:fn",
            "a:b:c",
            "json:dumps\n",
            "\udcff:f",
            "analysis:1fn",
        ]
    ),
    st.tuples(ARGV_TEXT, ARGV_TEXT).map(lambda t: f"zz_nosuch_{t[0]}:{t[1]}"),  # never an installed module
)
FILE_PATHS = paths(["f.root", "data", "nonexistent.root", "root://127.0.0.1:9//f", "root://", "s3://b/k"])


@dataclass
class Command:
    words: list[str]
    positional: st.SearchStrategy[str]
    arity: tuple[int, int] = (1, 1)  # positionals in a well-formed line
    options: dict[str, st.SearchStrategy[str]] = field(default_factory=dict)  # any value, mostly bad ones
    required: list[str] = field(default_factory=list)
    flags: list[str] = field(default_factory=list)
    listing: bool = False  # prints one line per problem before the error line


# values the option's type accepts, for well-formed lines (so the command itself, not the parser, meets the rest)
TYPED = {
    "--parallel": st.integers(1, 256).map(str),
    "-j": st.integers(1, 256).map(str),
    "--chunk-size": st.integers(1, 10**12).map(str),
    "--nthreads": st.integers(1, 64).map(str),
    "--port": st.integers(-1, 70_000).map(str),
    "--log-level": st.sampled_from(["DEBUG", "INFO", "ERROR"]),
    "--now": st.datetimes().map(lambda d: d.isoformat(sep=" ", timespec="seconds")),
}
COMMANDS = {
    "register": Command(
        ["register"],
        FILE_PATHS,
        (0, 2),
        {
            "--files-from": FILES_FROM,
            "--dataset": DIDS,
            "-d": DIDS,
            "--policy": POLICY_PATHS,
            "-p": POLICY_PATHS,
            "--rse": TEXT,
            "--meta": META,
            "-m": META,
            "--meta-file": META_FILES,
            "--parallel": INTS,
            "--now": DATES,
            "--policies": POLICY_PATHS,
        },
        ["--dataset", "--policy", "--rse"],
        ["--dry-run", "--json"],
    ),
    "pull": Command(
        ["pull"],
        DIDS,
        (1, 3),
        {
            "--to": paths(["f.root", "data"]),
            "-t": paths([]),
            "--rse-expression": TEXT,
            "--prefer": TEXT,
            "--site": TEXT,
            "--parallel": INTS,
            "-j": INTS,
        },
        ["--to"],
        ["--json"],
    ),
    "replicate": Command(
        ["replicate"], DIDS, (1, 1), {"--to": TEXT, "--parallel": INTS, "-j": INTS}, ["--to"], ["--dry-run", "--json"]
    ),
    "process": Command(
        ["process"],
        DIDS,
        (1, 1),
        {
            "--fn": FUNCTIONS,
            "--branches": TEXT,
            "-b": TEXT,
            "--tree": TEXT,
            "--chunk-size": INTS,
            "--out": paths(["data"]),
            "-o": paths([]),
        },
        ["--fn"],
        ["--json"],
    ),
    "deliver": Command(
        ["deliver"],
        DIDS,
        (1, 1),
        {
            "--columns": TEXT,
            "-c": TEXT,
            "--where": WHERE,
            "--to": TEXT,
            "--as": DIDS,
            "--meta": META,
            "--tree": TEXT,
            "--chunk-size": INTS,
        },
        ["--columns", "--to", "--as"],
        ["--json"],
    ),
    "policy check": Command(["policy", "check"], POLICY_PATHS, (1, 3), listing=True),
    "policy plan": Command(
        ["policy", "plan"], DIDS, (1, 1), {"--now": DATES, "--policies": POLICY_PATHS}, flags=["--json"]
    ),
    "policy apply": Command(
        ["policy", "apply"],
        DIDS,
        (0, 1),
        {"--now": DATES, "--policies": POLICY_PATHS},
        flags=["--all", "--dry-run", "--json"],
        listing=True,
    ),
    "status": Command(["status"], DIDS, (1, 1), flags=["--json"]),
    "transfer serve": Command(
        ["transfer", "serve"],
        TEXT,
        (0, 0),
        {
            "--config": SERVICE_CONFIGS,
            "-c": SERVICE_CONFIGS,
            "--host": TEXT,
            "--port": INTS,
            "--database": paths(["data", "f.root"]),
            "--log-level": LEVELS,
        },
    ),
    "transfer status": Command(
        ["transfer", "status"],
        TEXT,
        (0, 0),
        {"--url": URLS, "--token": TOKENS, "--cert": paths(["f.root"]), "--ca": paths(["f.root", "data"])},
        flags=["--json"],
    ),
    "transfer token": Command(["transfer", "token"], TEXT, (1, 1)),
    "worker": Command(
        ["worker"],
        TEXT,
        (0, 0),
        {
            "--site": TEXT,
            "--scheduler": st.sampled_from(["", "tcp://127.0.0.1:9", "nosuch://x"]),
            "--nthreads": INTS,
            "--name": TEXT,
        },
        ["--site"],
    ),
}
HELP = {"-h", "--help", "--version"}  # they succeed whatever else is on the line


@st.composite
def command_lines(draw: st.DrawFn, command: Command) -> list[str]:
    """Two in three lines are well formed (the required options, values of the right type where typer checks
    types, nothing unknown) so that the command itself meets the bad values; the others are anything: options
    in any order, unknown ones, missing values, junk."""
    if draw(st.integers(0, 2)):
        pieces = [[draw(command.positional)] for _ in range(draw(st.integers(*command.arity)))]
        names = command.required + draw(st.lists(st.sampled_from(sorted(command.options) or [""]), max_size=3))
        pieces += [[name, draw(TYPED.get(name, command.options[name]))] for name in names if name]
        pieces += [[flag] for flag in draw(st.lists(st.sampled_from(command.flags or [""]), max_size=2)) if flag]
    else:
        pieces = [[draw(command.positional)] for _ in range(draw(st.integers(0, 3)))]
        for _ in range(draw(st.integers(0, 5)) if command.options else 0):
            name = draw(st.sampled_from(sorted(command.options)))
            pieces.append([name] if draw(st.integers(0, 9)) == 0 else [name, draw(command.options[name])])
        pieces += [
            [draw(st.sampled_from(command.flags))] for _ in range(draw(st.integers(0, 2)) if command.flags else 0)
        ]
        pieces += [[draw(EXTRA)] for _ in range(draw(st.integers(0, 1)))]
    argv = [*command.words, *(word for piece in draw(st.permutations(pieces)) for word in piece)]
    return [word for word in argv if word not in HELP]


@pytest.fixture(scope="module")
def offline(tmp_path_factory) -> Iterator[Path]:
    """A scratch working directory with the files above; a rucio.cfg whose server does not exist; no Dask
    scheduler or transfer service configured; serving and Dask workers replaced by WouldStart."""
    import dask
    import distributed.cli.dask_worker

    import datalake.transfer.service

    tmp = tmp_path_factory.mktemp("fuzz-cli")
    for name, content in FILES.items():
        (tmp / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp / name).write_bytes(content)
    (tmp / "rucio.cfg").write_text(
        "[client]\nrucio_host = http://127.0.0.1:9\nauth_host = http://127.0.0.1:9\n"
        "account = dm\nauth_type = userpass\nusername = dm\npassword = x\n"
    )
    dask_config = copy.deepcopy(dask.config.config)  # `datalake worker` sets a key before it starts the worker

    def would_start(*_args: Any, **_kwargs: Any) -> None:
        raise WouldStart()

    with pytest.MonkeyPatch.context() as patch:
        for name in list(os.environ):
            if name.startswith(("DATALAKE_", "RUCIO_", "X509_")) or name in ("SITE_NAME", "COLUMNS"):
                patch.delenv(name)
        patch.setenv("RUCIO_CONFIG", str(tmp / "rucio.cfg"))
        patch.setenv("HOME", str(tmp))
        patch.chdir(tmp)
        patch.setattr(datalake.transfer.service, "serve", would_start)
        patch.setattr(distributed.cli.dask_worker.main, "main", would_start)
        yield tmp
    dask.config.config.clear()
    dask.config.config.update(dask_config)


@pytest.mark.parametrize("name", sorted(COMMANDS))
@settings(max_examples=60, deadline=None, phases=PHASES, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_every_command_line_ends_clearly(offline, name, data):
    command = COMMANDS[name]
    result = run(data.draw(command_lines(command), label="argv"))
    outcome = assert_clear(result, listing=command.listing)
    if outcome == "started":  # only a valid line gets there (nothing is served: see the fixture)
        assert name in ("transfer serve", "worker"), result
    event(outcome)


# -- the real executable, for what only a process shows ---------------------------------------------------------


@pytest.mark.parametrize(
    "argv",
    [
        [b"process", b"mc:x", b"--fn", b"json:dumps", b"-b", b"x", b"--scheduler", b"tcp://"],
        [b"deliver", b"mc:x", b"-c", b"x", b"--to", b"XRD1", b"--as", b"mc:y", b"--scheduler", b"nosuch://x"],
        [b"status", b"\xff:x"],
        [b"pull", b"mc:\xe9t\xe9", b"--to", b"\xff\xfe"],
        [b"policy", b"check", b"caf\xe9.yaml", b"\xff"],
    ],
)
def test_in_a_real_process(offline, argv):
    """Bytes that are not UTF-8 on the command line, and bad Dask scheduler addresses (a Dask client half made
    in-process would hang the test session when it is collected)."""
    env = {"PATH": "/usr/bin:/bin", "RUCIO_CONFIG": os.environ["RUCIO_CONFIG"], "HOME": str(offline)}
    done = subprocess.run([DATALAKE, *argv], capture_output=True, env=env, cwd=offline, timeout=60)
    err = done.stderr.decode("utf-8", "backslashreplace")
    result = Result([os.fsdecode(a) for a in argv], done.returncode, done.stdout.decode(errors="replace"), err)
    assert assert_clear(result, listing=argv[0] == b"policy").startswith("error"), result


# -- regressions: each was a traceback, exit 70, a mangled or a multi-line message ------------------------------


@pytest.mark.parametrize(
    ("argv", "code", "fragment"),
    [
        (["status", "mc:smile:"], 2, "'mc:smile:'"),  # rich drew an emoji for :smile:
        (["status", "mc:x\n"], 2, "breaks Rucio's naming rules"),  # a trailing newline passed the DID check
        (["transfer", "status", "--url", "http://127.0.0.1:9", "--token", "ü€"], 2, "printable ASCII"),
        (["transfer", "serve", "--config", "svc-date.yaml"], 2, "not valid YAML"),
        (["transfer", "serve", "--config", "svc-latin1.yaml"], 2, "not valid YAML"),
        (["transfer", "serve", "--config", "no\nsuch.yaml"], 2, "cannot read no\\nsuch.yaml"),
        (["transfer", "token", " "], 2, "name the account"),
        (["deliver", "mc:x", "-c", "x", "--to", "XRD1", "--as", "mc:y", "--where", "1" + "+1" * 50_000], 2, "nested"),
        (["deliver", "mc:x", "-c", "x", "--to", "XRD1", "--as", "mc:y", "--where", "x\udcff > 1"], 2, "not an expr"),
        (["deliver", "mc:x", "-c", "x", "--to", "XRD1", "--as", "mc:y", "--where", "10**10**10 > x"], 2, "** between"),
    ],
)
def test_regressions_found_by_the_fuzz(offline, argv, code, fragment):
    result = run(argv)
    assert assert_clear(result) == f"error {code}" and fragment in result.err, result


def test_the_token_line_is_one_line_when_piped(offline):
    """``config: tokens: {...}`` is pasted into the service's config: rich wrapped it at 80 columns."""
    result = run(["transfer", "token", "conveyor-account"])
    assert result.code == 0 and result.out.splitlines()[1].startswith('config: tokens: {"conveyor-account": "')
