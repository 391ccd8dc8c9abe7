"""Fuzzing the policy loader: whatever a policy file holds, ``parse``/``load``/``check`` answer with a policy or
with problems (file, line, one line each), never another exception and never a hang; a policy they accept can
be evaluated. Cases: 850 generated (max_examples 300 + 400 + 100 + 50), 1 explicit, 9 fixed regressions."""

from __future__ import annotations

import copy
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

import time_limits
import yaml
from hypothesis import Phase, event, given, settings
from hypothesis import strategies as st
from time_limits import Hang

from datalake.errors import PolicyError
from datalake.policy import SharingPolicy, check, evaluate, load, parse

POLICIES = Path(__file__).resolve().parent.parent / "policies"
TEXTS = {p.name: p.read_text() for p in sorted(POLICIES.glob("*.yaml"))}
DATA = {name: yaml.safe_load(text) for name, text in TEXTS.items()}
SOURCE = "p.yaml"
LIMIT = 30  # seconds for one case: far more than any takes, also on a busy shared machine; reaching it is a hang
# no "explain" phase: it re-runs a failing case under a tracer, many times slower, and LIMIT would hide the failure
PHASES = [Phase.explicit, Phase.reuse, Phase.generate, Phase.shrink]


@contextmanager
def time_limit(seconds: float) -> Iterator[None]:
    """``time_limits.time_limit`` whose hang is a plain failure, which Hypothesis shrinks and reports."""
    try:
        with time_limits.time_limit(seconds):
            yield
    except Hang as err:
        raise AssertionError(str(err)) from None


def exercise(policy: SharingPolicy) -> None:
    """A policy the loader accepts must also evaluate (dates, durations, lifetimes) without an exception."""
    meta = {
        key: "2012-12-31"
        for key, kind in {**policy.metadata.optional, **policy.metadata.required}.items()
        if kind in ("date", "datetime")
    }
    for now in (datetime(2000, 1, 1), datetime(2040, 6, 1)):
        evaluate(policy, "scope:name", meta, now, registered=datetime(2020, 1, 1))


def assert_answered(text: str) -> str:
    """Parse ``text`` in bounded time; either a policy (which evaluates) or clear problems. Returns which."""
    with time_limit(LIMIT):
        policy, problems = parse(text, SOURCE)
        if policy is not None:
            assert problems == []
            exercise(policy)
            return "valid"
    assert problems, "neither a policy nor a problem"
    last = len(text.splitlines()) + 2  # YAML also breaks lines at CR, NEL and LS
    for problem in problems:
        shown = str(problem)
        assert len(shown.splitlines()) == 1, shown
        assert shown.startswith(f"{SOURCE}:{problem.line}:") and 1 <= problem.line <= last, shown
        assert problem.message.strip() and "Traceback" not in shown and " object at 0x" not in shown, shown
    return "problems"


# -- values a policy field may wrongly hold ------------------------------------------------------------------

NASTY = [
    "",
    " ",
    "5y",
    "-5y",
    "1y6mo",
    "99999999999999999999y",
    "0d",
    "1x",
    "y",
    "12",
    "2027-02-30",
    "2024-13-01",
    "0000-01-01",
    "9999-12-31",
    "immediate",
    "embargo",
    "after",
    "staged",
    "never",
    "public",
    "collaboration",
    "restricted",
    "suspended",
    "secret",
    "adler32",
    "MD5",
    "str",
    "list[str]",
    "dict",
    "10.5072",
    "10.x",
    "access=public",
    "x" * 300,
    "é☃\U0001d518",
    "a\nb",
    "\x1b[31mred",
    "\t",
    "${HOME}",
    "*",
    "&",
    "null",
    "~",
    "yes",
    "off",
    "0x1F",
    "1e400",
    ".nan",
    ".inf",
    "open-data",
    "custodial",
    "run_end",
    "creators",
]
SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.sampled_from([0, -1, 10**30, 2**63, -(2**63) - 1, 10**400]),
    st.floats(),
    st.text(max_size=40),
    st.sampled_from(NASTY),
    st.dates(),
    st.datetimes(),
)
VALUES = st.recursive(
    SCALARS,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12) | st.integers(), inner, max_size=4)
    ),
    max_leaves=12,
)


def paths(node: Any, prefix: tuple = ()) -> Iterator[tuple]:
    yield prefix
    if isinstance(node, dict):
        for key, value in node.items():
            yield from paths(value, (*prefix, key))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from paths(value, (*prefix, i))


def mutate(doc: Any, path: tuple, op: str, value: Any, key: Any) -> Any:
    """One change at ``path``: replace the value, delete it, add a key beside it, or wrap it in a list."""
    if not path:
        return value if op == "replace" else [doc] if op == "wrap" else doc
    parent = doc
    for part in path[:-1]:
        parent = parent[part]
    last = path[-1]
    if op == "replace":
        parent[last] = value
    elif op == "delete":
        del parent[last]
    elif op == "wrap":
        parent[last] = [parent[last]]
    elif isinstance(parent, dict):
        parent[key] = value
    else:
        parent.append(value)
    return doc


@st.composite
def mutated(draw: st.DrawFn) -> str:
    doc = copy.deepcopy(DATA[draw(st.sampled_from(sorted(DATA)))])
    for _ in range(draw(st.integers(1, 4))):
        where = draw(st.sampled_from(list(paths(doc))))
        op = draw(st.sampled_from(["replace", "replace", "delete", "add", "wrap"]))
        doc = mutate(doc, where, op, draw(VALUES), draw(st.text(max_size=12) | st.sampled_from(["when", "until"])))
    return yaml.safe_dump(doc, allow_unicode=draw(st.booleans()), sort_keys=False, default_flow_style=None)


@settings(max_examples=300, deadline=None, phases=PHASES)
@given(mutated())
def test_mutated_policies_are_valid_or_clearly_refused(text):
    event(assert_answered(text))


# -- text-level damage: broken YAML syntax ---------------------------------------------------------------------

TOKENS = [
    ":",
    "- ",
    "[",
    "]",
    "{",
    "}",
    "&a ",
    "*a",
    "*nosuch",
    "!!python/object:os.system ",
    "!!python/name:os.system",
    "\t",
    "\n  ",
    "? ",
    "|",
    ">",
    "'",
    '"',
    "#",
    "---\n",
    "...\n",
    "%YAML 1.1\n",
    "<<: ",
    "\x00",
    "\ud800",
    "\ufeff",
    "\r",
    "\x85",
    "\u2028",
    "!!binary ",
    "!!set ",
    "!!timestamp ",
    "@",
    "`",
    "%",
    "\\",
]


@settings(max_examples=400, deadline=None, phases=PHASES)
@given(
    base=st.sampled_from(sorted(TEXTS)),
    edits=st.lists(
        st.tuples(st.integers(0, 10_000), st.integers(0, 30), st.text(max_size=12) | st.sampled_from(TOKENS)),
        min_size=1,
        max_size=6,
    ),
)
def test_damaged_yaml_is_valid_or_clearly_refused(base, edits):
    text = TEXTS[base]
    for position, cut, insert in edits:
        at = position % (len(text) + 1)
        text = text[:at] + insert + text[at + cut :]
    event(assert_answered(text))


# -- documents built to hurt a YAML loader ---------------------------------------------------------------------


def laughs(fanout: int, depth: int, field: str) -> str:
    """Anchors of anchors: ``fanout ** depth`` values once expanded, from a few hundred bytes."""
    lines = [f"l0: &l0 [{', '.join(['lol'] * fanout)}]"]
    lines += [f"l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * fanout)}]" for i in range(1, depth)]
    policy = TEXTS["lhc-collaboration.yaml"].replace("description:", f"{field}: *l{depth - 1}\nx_description:")
    return "\n".join(lines) + "\n" + policy


def nested(depth: int, flow: bool) -> str:
    if flow:
        return "name: " + "[" * depth + "]" * depth + "\n"
    return "".join("  " * i + f"k{i}:\n" for i in range(depth)) + "  " * depth + "leaf\n"


NASTY_DOCUMENTS = st.one_of(
    st.builds(laughs, st.integers(2, 12), st.integers(2, 12), st.sampled_from(["name", "rules", "access", "zz"])),
    st.builds(nested, st.integers(20, 3000), st.booleans()),
    st.sampled_from(
        [
            "name: &a [*a]\n",
            "access: &a {tier: *a}\n",
            "&a {x: *a}\n",
            "rules: &r [{id: *r}]\n",
            "a: *undefined\n",
            "name: !!python/object/apply:os.system ['true']\n",
            "name: !!python/object:os.system {}\n",
            "!!python/object/new:os.system [echo]\n",
            "name: !!python/name:os.system\n",
            "name: !!binary aGVsbG8=\n",
            "name: !!set {a, b}\n",
            "name: !!omap [a: 1]\n",
            "name: !!timestamp nope\n",
            "name: !custom x\n",
            "",
            "# only a comment\n",
            "---\n...\n",
            "a: 1\n---\nb: 2\n",
            "\ufeff",
            "\x00",
            "[1, 2]\n",
            "just text\n",
            "<<: {name: x}\n",
            "<<: 5\n",
            "? [a]\n: 1\n",
            "? {a: 1}\n: 1\n",
            "~: x\n",
            "1.5: x\n",
            "name: 1e400\n",
            "data_level: " + "9" * 5000 + "\n",
            "release: {mode: embargo, until: 2027-02-30}\n",
            "%YAML 9.9\nname: x\n",
            "%TAG ! tag:yaml.org,2002:python/\n---\nname: !object:os.system {}\n",
        ]
    ),
    st.builds(
        lambda n, where: TEXTS["fermi-observatory.yaml"].replace("description:", f"{where} {'x' * n}\nx:"),
        st.sampled_from([10**5, 2**20 - 100, 2**20 + 1, 3 * 2**20]),
        st.sampled_from(["description:", "name:", "? ", "zz:"]),
    ),
    st.builds(lambda n: "".join(f"k{i}: {i}\n" for i in range(n)), st.sampled_from([1000, 20_000])),
    st.builds(
        lambda n: "rules:\n" + "  - {id: r, copies: 1, rse_expression: e}\n" * n, st.sampled_from([1, 500, 20_000])
    ),
)


@settings(max_examples=100, deadline=None, phases=PHASES)
@given(NASTY_DOCUMENTS)
def test_hostile_documents_are_refused_quickly(text):
    assert assert_answered(text) == "problems"


def test_regressions_found_by_the_fuzz():
    """The duplicate-key walk expanded 9**9 aliases (minutes); deep nesting and an alias inside its own anchor
    ended in RecursionError; values that do not fit their tag raised AttributeError, KeyError or IndexError; a
    10**20-year lifetime passed and overflowed when applied; a key with a newline or an escape broke the line."""
    lifetime = TEXTS["lhc-collaboration.yaml"].replace("lifetime: 1y", "lifetime: 99999999999999999999y")
    cases = {
        laughs(9, 9, "name"): "5: more than 10000 values once aliases are expanded",
        nested(5000, True): "1: nested deeper than 32 levels",
        "x: 1\naccess: &a {tier: *a}\n": "2: alias *a is inside its own anchor",
        "x: 1\nname: !!timestamp soon\n": "2: not valid YAML ('soon' is not a valid timestamp)",
        "name: !!bool maybe\n": "1: not valid YAML ('maybe' is not a valid bool)",
        "x: 1\n\nname: !!int ''\n": "3: not valid YAML ('' is not a valid int)",
        "name: a\x00b\n": "1: not valid YAML (unacceptable character #x0000: special characters are not allowed)",
        lifetime: "37: rules[1].lifetime: a duration is at most 1000 years",
        '"a\\nb\\x1b[0m": 1\n': "1: a\\nb\\x1b[0m: unknown field",
    }
    for text, expected in cases.items():
        with time_limit(LIMIT):
            policy, problems = parse(text, SOURCE)
        assert policy is None and f"{SOURCE}:{expected}" in [str(p) for p in problems], problems


# -- files: bytes that are not UTF-8, through load() and check() -----------------------------------------------


def spliced(name: str, position: int, junk: bytes) -> bytes:
    data = TEXTS[name].encode()
    at = position % len(data)
    return data[:at] + junk + data[at:]


FILE_BYTES = st.one_of(
    st.binary(max_size=3000),
    st.builds(
        spliced,
        st.sampled_from(sorted(TEXTS)),
        st.integers(0, 10_000),
        st.sampled_from([b"\xff", b"\xfe\xff", b"\xc3", b"\xed\xa0\x80", b"\x00", b"\xef\xbb\xbf"]),
    ),
    st.sampled_from([TEXTS[n].encode(codec) for n in sorted(TEXTS) for codec in ("utf-16", "utf-32", "cp1252")]),
)


@settings(max_examples=50, deadline=None, phases=PHASES)
@given(FILE_BYTES)
def test_policy_files_with_any_bytes(content):
    with tempfile.TemporaryDirectory() as tmp, time_limit(LIMIT):
        path = Path(tmp) / "p.yaml"
        path.write_bytes(content)
        policies, problems = check([tmp, Path(tmp) / "missing.yaml"])
        assert problems and all(len(str(p).splitlines()) == 1 for p in problems)  # missing.yaml at least
        try:
            policy = load(path)
        except PolicyError as err:
            assert str(err).strip() and len(str(err).splitlines()) == 1 and not policies
        else:
            assert list(policies.values()) == [policy]
