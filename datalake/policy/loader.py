"""Reading policy files: YAML -> SharingPolicy, every problem reported with its file, line and field."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from datalake.errors import PolicyError
from datalake.policy.model import SharingPolicy

# A policy is a page of YAML (the examples: under 3 KiB, 100 nodes, 4 levels). Far larger is a mistake or an
# attack, refused before PyYAML builds it: deep nesting makes its composer recurse past Python's limit, and
# aliases of aliases ("billion laughs") or an alias inside its own anchor expand without end.
MAX_CHARS = 1 << 20
MAX_DEPTH = 32
MAX_NODES = 10_000  # after expanding aliases


class _Loader(yaml.SafeLoader):
    """PyYAML's safe loader, whose constructors fail with KeyError, IndexError, AttributeError or ValueError when
    a value does not fit its tag (``!!bool maybe``, ``!!int ""``, ``!!timestamp soon``, ``2027-02-30``): here
    that is a YAML error that points at the value."""

    def construct_object(self, node: yaml.Node, deep: bool = False) -> Any:
        try:
            return super().construct_object(node, deep)
        except (LookupError, AttributeError, ValueError):
            tag = node.tag.rsplit(":", 1)[-1]
            value = node.value if isinstance(node, yaml.ScalarNode) else ""
            problem = f"{value[:60]!r}{'...' if len(value) > 60 else ''} is not a valid {tag}"
            raise yaml.constructor.ConstructorError(None, None, problem, node.start_mark) from None


@dataclass(frozen=True)
class Problem:
    file: str
    line: int
    field: str
    message: str

    def __str__(self) -> str:
        where = f" {self.field}:" if self.field else ""
        return _one_line(f"{self.file}:{self.line}:{where} {self.message}")


def _one_line(text: str) -> str:
    """Keys and values from the file may hold newlines or terminal escapes ("\\x1b" in a quoted string): shown
    escaped, so one problem stays one line."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def parse(text: str, source: str = "<policy>") -> tuple[SharingPolicy | None, list[Problem]]:
    """A policy from YAML text, or every problem found in it."""
    if len(text) > MAX_CHARS:
        return None, [Problem(source, 1, "", f"larger than {MAX_CHARS >> 20} MiB: not a policy file")]
    try:
        too_big = _shape_problem(text, source)
        if too_big:
            return None, [too_big]
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        data = _Loader(text).get_single_data()
    except (yaml.YAMLError, ValueError) as err:  # ValueError: should PyYAML raise one outside _Loader
        mark = getattr(err, "problem_mark", None)
        line = mark.line + 1 if mark else text.count("\n", 0, getattr(err, "position", 0)) + 1  # ReaderError
        why = getattr(err, "problem", None) or next(iter(str(err).splitlines()), "")
        return None, [Problem(source, line, "", f"not valid YAML ({why})")]
    if node is None:
        return None, [Problem(source, 1, "", "empty file")]
    problems = list(_duplicate_keys(node, source))
    if not isinstance(data, dict):
        return None, [Problem(source, node.start_mark.line + 1, "", "a policy is a mapping of fields")]
    try:
        policy = SharingPolicy.model_validate(data)
    except ValidationError as err:
        for error in err.errors():
            line, path = _locate(node, error["loc"])
            problems.append(Problem(source, line, path, _message(error)))
        return None, problems
    return (None if problems else policy), problems


def load(path: str | Path) -> SharingPolicy:
    """One policy file; a PolicyError lists every problem in it."""
    file = Path(path)
    try:
        text = file.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise PolicyError(f"{file}: cannot read policy ({getattr(err, 'strerror', None) or err})") from None
    policy, problems = parse(text, str(file))
    if problems or policy is None:
        raise PolicyError("; ".join(str(p) for p in problems))
    return policy


def check(paths: Iterable[str | Path]) -> tuple[dict[str, SharingPolicy], list[Problem]]:
    """Validate files (directories: their *.yaml/*.yml); policy names must be unique across them."""
    files: list[Path] = []
    for raw in paths:
        path = Path(raw)
        files += sorted([*path.glob("*.yaml"), *path.glob("*.yml")]) if path.is_dir() else [path]
    policies: dict[str, SharingPolicy] = {}
    where: dict[str, Path] = {}
    problems: list[Problem] = []
    for file in files:
        try:
            text = file.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as err:
            problems.append(Problem(str(file), 0, "", f"cannot read ({getattr(err, 'strerror', None) or err})"))
            continue
        policy, found = parse(text, str(file))
        problems += found
        if policy is None:
            continue
        if policy.name in policies:
            also = f"policy {policy.name!r} is also defined in {where[policy.name]}"
            problems.append(Problem(str(file), 1, "name", also))
            continue
        policies[policy.name] = policy
        where[policy.name] = file
    return policies, problems


def find(directory: str | Path, name: str) -> SharingPolicy:
    """The policy called ``name`` in ``directory`` (what ``apply`` uses to govern a DID that records it)."""
    policies, problems = check([directory])
    if name in policies:
        return policies[name]
    bad = [p for p in problems if Path(p.file).stem == name]
    if bad:
        raise PolicyError("; ".join(str(p) for p in bad))
    raise PolicyError(f"no policy named {name!r} in {directory}")


def _shape_problem(text: str, source: str) -> Problem | None:
    """Nesting deeper than MAX_DEPTH, an alias inside its own anchor, or more than MAX_NODES nodes once aliases are
    expanded; found from PyYAML's event stream (no recursion, nothing expanded)."""
    sizes: dict[str, int] = {}  # expanded node count of each anchor seen so far
    open_: list[list[Any]] = [[None, 0]]  # [anchor, nodes so far] of each collection being read; [0]: the stream
    for event in yaml.parse(text, Loader=yaml.SafeLoader):
        line = event.start_mark.line + 1
        if isinstance(event, yaml.CollectionStartEvent):
            open_.append([event.anchor, 1])
            if len(open_) - 1 > MAX_DEPTH:
                return Problem(source, line, "", f"nested deeper than {MAX_DEPTH} levels")
            continue
        if isinstance(event, yaml.CollectionEndEvent):
            anchor, count = open_.pop()
            if anchor is not None:
                sizes[anchor] = count
        elif isinstance(event, yaml.AliasEvent):
            if any(anchor == event.anchor for anchor, _ in open_):
                return Problem(source, line, "", f"alias *{event.anchor} is inside its own anchor")
            count = sizes.get(event.anchor, 1)  # an undefined alias is reported by the composer
        elif isinstance(event, yaml.ScalarEvent):
            count = 1
            if event.anchor is not None:
                sizes[event.anchor] = 1
        else:
            continue
        open_[-1][1] += count
        if open_[-1][1] > MAX_NODES:
            return Problem(source, line, "", f"more than {MAX_NODES} values once aliases are expanded")
    return None


def _message(error: dict[str, Any]) -> str:
    if error["type"] == "extra_forbidden":
        return "unknown field"
    if error["type"] == "missing":
        return "required field is missing"
    message = error["msg"]
    return message.removeprefix("Value error, ")


def _locate(node: yaml.Node, loc: tuple[Any, ...]) -> tuple[int, str]:
    """The line of the deepest YAML node on pydantic's error path, and the path as a user writes it."""
    shown: list[str] = []
    line = node.start_mark.line + 1
    for part in loc:
        if isinstance(node, yaml.MappingNode) and isinstance(part, str):
            pair = next(((k, v) for k, v in node.value if getattr(k, "value", None) == part), None)
            if pair is not None:
                key, node = pair
                line = key.start_mark.line + 1
                shown.append(part)
                continue
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int) and part < len(node.value):
            node = node.value[part]
            line = node.start_mark.line + 1
            shown.append(f"[{part}]")
            continue
        if isinstance(part, str) and _is_union_tag(part):
            continue  # pydantic names the union member it tried; it is not a key in the file
        shown.append(str(part))
        break  # missing or unknown: point at the enclosing mapping
    return line, ".".join(shown).replace(".[", "[")


def _is_union_tag(part: str) -> bool:
    return part in {"immediate", "embargo", "after", "staged", "never"} or part.startswith(("function-", "json-"))


def _duplicate_keys(node: yaml.Node, source: str, path: str = "") -> Iterable[Problem]:
    """PyYAML keeps the last of two equal keys silently; in a reviewed policy that hides a mistake."""
    if isinstance(node, yaml.MappingNode):
        seen: set[str] = set()
        for key, value in node.value:
            name = str(getattr(key, "value", ""))
            if name in seen:
                yield Problem(source, key.start_mark.line + 1, f"{path}{name}", "duplicate key")
            seen.add(name)
            yield from _duplicate_keys(value, source, f"{path}{name}.")
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            yield from _duplicate_keys(item, source, f"{path.rstrip('.')}[{i}].")
