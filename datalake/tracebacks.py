"""The user's own frames when their function fails on a worker: taken there, completed on the client, shown
under the one-line error, in ``--json`` and as a note on the Python exception (as Dask and coffea show remote
tracebacks).

Why the client completes them: a function sent by value runs from code whose file the worker does not have
(the user's script or notebook cell stays on their machine), and cloudpickle 3.1.3 renames that file to
``<dynamic-code>`` anyway. The worker sends each frame's code identity (qualified name and first line); the
client, which holds the function, finds the file and reads the source line there, through ``linecache`` as
``traceback`` does (so IPython's cells are found too).
"""

from __future__ import annotations

import linecache
import sysconfig
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from types import CodeType, TracebackType
from typing import Any

_DATALAKE = Path(__file__).resolve().parent


@dataclass(frozen=True)
class Frame:
    """One frame of the user's call stack, most recent last."""

    file: str
    line: int
    function: str  # qualified name
    code: str = ""  # the source line, stripped; empty when no source is at hand
    first_line: int = 0  # the function's first line: with ``function``, finds the file of renamed code

    def as_dict(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if k != "first_line"}


def capture(tb: TracebackType | None) -> tuple[Frame, ...]:
    """On the worker: the frames of ``tb``, which starts in the user's function (the caller passes the
    traceback from below its own frame)."""
    frames = []
    while tb is not None:
        code = tb.tb_frame.f_code
        text = linecache.getline(code.co_filename, tb.tb_lineno, tb.tb_frame.f_globals).strip()
        frames.append(Frame(code.co_filename, tb.tb_lineno, code.co_qualname, text, code.co_firstlineno))
        tb = tb.tb_next
    return tuple(frames)


def resolve(frames: Sequence[Frame], fn: Callable[..., Any]) -> tuple[Frame, ...]:
    """On the client: give frames of code sent by value their real file, and the source line as the user's own
    copy reads (the worker's line where the client has none)."""
    where = {(c.co_qualname, c.co_firstlineno): c.co_filename for c in _codes(fn)}
    out = []
    for frame in frames:
        file = frame.file
        if not linecache.getlines(file):  # not readable here: renamed by cloudpickle, or the worker's own path
            file = where.get((frame.function, frame.first_line), file)
        code = linecache.getline(file, frame.line).strip() or frame.code  # the user's copy first
        out.append(Frame(file, frame.line, frame.function, code, frame.first_line))
    return tuple(out)


def shown(frames: Sequence[Frame]) -> tuple[tuple[Frame, ...], int]:
    """The frames worth showing and how many were left out: the user's function and every frame of their own
    code; library frames below the last of those are counted, not shown (all with ``DATALAKE_DEBUG``)."""
    from datalake.settings import settings

    if settings().debug:
        return tuple(frames), 0
    last = max((i for i, f in enumerate(frames) if i == 0 or not _library(f.file)), default=-1)
    return tuple(frames[: last + 1]), len(frames) - last - 1


def render(frames: Sequence[Frame]) -> str:
    """Python's own traceback layout, so editors and terminals link the file and line."""
    kept, hidden = shown(frames)
    lines = ["Traceback of your function (most recent call last):"]
    for f in kept:
        lines.append(f'  File "{f.file}", line {f.line}, in {f.function}')
        if f.code:
            lines.append(f"    {f.code}")
    if hidden:
        more = f"{hidden} more frame{'s' if hidden > 1 else ''}"
        lines.append(f"  ... {more} inside libraries (DATALAKE_DEBUG=1 shows them)")
    return "\n".join(lines)


def attach(err: BaseException, frames: Sequence[Frame]) -> BaseException:
    """Keep the frames on the exception (``err.frames``) and show them in its traceback (a PEP 678 note)."""
    err.frames = tuple(frames)  # type: ignore[attr-defined]
    err.__notes__ = [render(frames)] if frames else []
    return err


def _library(file: str) -> bool:
    """Code the user did not write: installed packages, the standard library, datalake itself."""
    if file.startswith("<") and file.endswith(">"):
        return False  # a notebook cell or a string the user compiled
    if {"site-packages", "dist-packages"} & set(Path(file).parts):
        return True  # installed, here or in a worker's environment laid out otherwise
    path = Path(file).resolve()
    roots = [Path(sysconfig.get_paths()[k]).resolve() for k in ("purelib", "platlib", "stdlib")] + [_DATALAKE]
    return any(path.is_relative_to(r) for r in roots)


def _codes(fn: Callable[..., Any]) -> Iterator[CodeType]:
    """Every code object the function may have run: its own and nested ones, its closure's functions, and the
    functions and methods defined beside it (its module, or the namespace of the notebook cell or string it was
    compiled in): helpers it calls travel with it."""
    roots: list[Any] = [fn, *(c.cell_contents for c in getattr(fn, "__closure__", None) or () if _filled(c))]
    home = getattr(fn, "__module__", None)
    for value in list((getattr(fn, "__globals__", None) or {}).values()):
        if getattr(value, "__module__", None) == home:
            roots.append(value)
            if isinstance(value, type):
                roots.extend(vars(value).values())
    stack = [getattr(getattr(r, "__func__", r), "__code__", None) for r in roots]  # methods: their function
    seen: set[int] = set()
    while stack:
        code = stack.pop()
        if not isinstance(code, CodeType) or id(code) in seen:
            continue
        seen.add(id(code))
        yield code
        stack.extend(c for c in code.co_consts if isinstance(c, CodeType))


def _filled(cell: Any) -> bool:
    try:
        cell.cell_contents  # noqa: B018
    except ValueError:
        return False
    return True
