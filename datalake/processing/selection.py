"""``--where`` expressions: an event selection written like Python over branch names, checked before any work
is sent out and evaluated without ``eval``.

Allowed: branch names, numbers, ``True``/``False``; arithmetic (``+ - * / // % **``), comparisons (chains
too), ``and``/``or``/``not`` (also ``& | ~``), and the functions below. Per-object quantities reduce to one value
per event with ``num``/``any``/``all``/``sum``/``max``/``min`` (over each event's list), e.g.
``nMuon >= 2 and max(Muon_pt) > 25`` or ``any((Muon_pt > 20) & Muon_tightId)``. The result must be one boolean
per event.
"""

from __future__ import annotations

import ast
import operator
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from datalake.errors import ConfigError

_BINARY: dict[type, Callable[[Any, Any], Any]] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv,
    ast.Mod: operator.mod,
    ast.Pow: operator.pow,
    ast.BitAnd: operator.and_,
    ast.BitOr: operator.or_,
}
_COMPARE: dict[type, Callable[[Any, Any], Any]] = {
    ast.Lt: operator.lt,
    ast.LtE: operator.le,
    ast.Gt: operator.gt,
    ast.GtE: operator.ge,
    ast.Eq: operator.eq,
    ast.NotEq: operator.ne,
}


def _functions() -> dict[str, Callable[..., Any]]:
    import awkward as ak
    import numpy as np

    def reducer(name: str) -> Callable[[Any], Any]:
        fn = getattr(ak, name)
        return lambda x: (
            fn(x, axis=-1) if name in ("any", "all", "sum", "count") else fn(x, axis=-1, mask_identity=False)
        )

    return {
        "num": lambda x: ak.num(x, axis=-1),
        "any": reducer("any"),
        "all": reducer("all"),
        "sum": reducer("sum"),
        "max": reducer("max"),
        "min": reducer("min"),
        "abs": np.abs,
        "sqrt": np.sqrt,
        "cos": np.cos,
        "cosh": np.cosh,
        "exp": np.exp,
        "log": np.log,
    }


FUNCTIONS = ("num", "any", "all", "sum", "max", "min", "abs", "sqrt", "cos", "cosh", "exp", "log")


@dataclass(frozen=True)
class Selection:
    """A parsed ``--where`` expression: its text and the branches it reads."""

    text: str
    branches: tuple[str, ...]

    def mask(self, events: Mapping[str, Any]) -> Any:
        """One boolean per event (an awkward/numpy array) for the chunk ``events``."""
        import awkward as ak
        import numpy as np

        value = _Evaluator(events, _functions()).visit(ast.parse(self.text, mode="eval").body)
        if isinstance(value, bool | np.bool_):  # a constant selection: every event or none
            value = np.full(len(events), bool(value))
        array = ak.Array(value) if not isinstance(value, ak.Array) else value
        if array.ndim != 1 or str(array.type.content) not in ("bool", "?bool"):
            raise ConfigError(
                f"--where {self.text!r} must give one true/false per event, got {array.type.content}"
                " (reduce lists with any(), all(), num(), max()...)"
            )
        return ak.fill_none(array, False)


def parse(text: str) -> Selection:
    """Check ``text`` (one clear error naming what is not allowed) and find the branch names it uses."""
    try:
        tree = ast.parse(text.strip(), mode="eval")
    except SyntaxError as err:
        raise ConfigError(f"--where {text!r} is not an expression: {err.msg}") from None
    except (RecursionError, MemoryError):  # how CPython's parser gives up on very deep nesting
        raise ConfigError(f"--where {text!r} is nested too deeply") from None
    except ValueError as err:  # text that is not Unicode (a command line in another encoding)
        raise ConfigError(f"--where {text!r} is not an expression: {err}") from None
    names: list[tuple[int, int, str]] = []
    called = {id(n.func) for n in ast.walk(tree) if isinstance(n, ast.Call)}
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            if not isinstance(node.func, ast.Name) or node.func.id not in FUNCTIONS or node.keywords:
                raise ConfigError(f"--where {text!r}: only these functions are allowed: {', '.join(FUNCTIONS)}")
            if len(node.args) != 1:
                raise ConfigError(f"--where {text!r}: {node.func.id}() takes one argument")
        elif isinstance(node, ast.Name):
            if node.id in FUNCTIONS and id(node) not in called:
                raise ConfigError(f"--where {text!r}: {node.id} is a function: call it, e.g. {node.id}(Muon_pt)")
            if node.id not in FUNCTIONS:
                names.append((node.lineno, node.col_offset, node.id))
        elif isinstance(node, ast.Constant):
            if not isinstance(node.value, int | float | bool):
                raise ConfigError(f"--where {text!r}: only numbers and True/False are allowed as constants")
        elif isinstance(node, ast.BinOp) and isinstance(node.op, ast.Pow):
            if not any(isinstance(n, ast.Name) for n in ast.walk(node)):  # 10**10**10: exact, and without end
                raise ConfigError(f"--where {text!r}: ** between plain numbers is not allowed (write the value)")
        elif not isinstance(node, _ALLOWED):
            raise ConfigError(f"--where {text!r}: {type(node).__name__} is not allowed in a selection")
    return Selection(text.strip(), tuple(dict.fromkeys(name for *_, name in sorted(names))))  # as written


_ALLOWED = (
    ast.Expression,
    ast.BoolOp,
    ast.And,
    ast.Or,
    ast.UnaryOp,
    ast.Not,
    ast.USub,
    ast.UAdd,
    ast.Invert,
    ast.BinOp,
    ast.Compare,
    ast.Load,
    *_BINARY,
    *_COMPARE,
)


class _Evaluator(ast.NodeVisitor):
    def __init__(self, events: Mapping[str, Any], functions: Mapping[str, Callable[..., Any]]) -> None:
        self.events = events
        self.functions = functions

    def visit_Name(self, node: ast.Name) -> Any:
        return self.events[node.id]

    def visit_Constant(self, node: ast.Constant) -> Any:
        return node.value

    def visit_BinOp(self, node: ast.BinOp) -> Any:
        return _BINARY[type(node.op)](self.visit(node.left), self.visit(node.right))

    def visit_UnaryOp(self, node: ast.UnaryOp) -> Any:
        value = self.visit(node.operand)
        if isinstance(node.op, ast.Not | ast.Invert):
            return ~value if not isinstance(value, bool) else not value
        return -value if isinstance(node.op, ast.USub) else value

    def visit_BoolOp(self, node: ast.BoolOp) -> Any:
        combine = operator.and_ if isinstance(node.op, ast.And) else operator.or_
        values = [self.visit(v) for v in node.values]
        out = values[0]
        for value in values[1:]:
            out = combine(out, value)
        return out

    def visit_Compare(self, node: ast.Compare) -> Any:
        left, out = self.visit(node.left), None
        for op, right_node in zip(node.ops, node.comparators, strict=True):
            right = self.visit(right_node)
            part = _COMPARE[type(op)](left, right)
            out = part if out is None else out & part
            left = right
        return out

    def visit_Call(self, node: ast.Call) -> Any:
        return self.functions[node.func.id](self.visit(node.args[0]))  # type: ignore[union-attr]
