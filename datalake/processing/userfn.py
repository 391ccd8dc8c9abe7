"""Loading the user's function for ``--fn module:function`` or ``--fn path/to/file.py:function``.

Workers must be able to run it: a function from an installed package is sent by reference (the workers import
it), one from a local module or file is sent by value (cloudpickle), so an analysis script works without
installing it on every site.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
import sysconfig
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

from datalake.errors import ConfigError


def _installed(module: ModuleType) -> bool:
    path = getattr(module, "__file__", None)
    if path is None:
        return True  # built in
    roots = {sysconfig.get_paths()[k] for k in ("purelib", "platlib", "stdlib", "platstdlib")}
    here = Path(path).resolve()
    if any(here.is_relative_to(Path(r).resolve()) for r in roots):
        return True
    top = sys.modules.get(module.__name__.split(".")[0])
    return top is not None and top.__name__ == "datalake"  # our own examples: on every worker


def load(spec: str) -> Callable[[Any], Any]:
    """The function named by ``spec``; one clear error if it cannot be found."""
    where, sep, name = spec.rpartition(":")
    if not sep or not where or not name.isidentifier():
        raise ConfigError(f"--fn {spec!r}: write module:function or path/to/file.py:function")
    try:
        if where.endswith(".py") or "/" in where:
            path = Path(where)
            if not path.is_file():
                raise ConfigError(f"--fn {spec!r}: no such file {where}")
            module_name = f"datalake_user_{path.stem}"
            module_spec = importlib.util.spec_from_file_location(module_name, path)
            module = importlib.util.module_from_spec(module_spec)  # type: ignore[arg-type]
            sys.modules[module_name] = module
            module_spec.loader.exec_module(module)  # type: ignore[union-attr]
        else:
            if "" not in sys.path and str(Path.cwd()) not in sys.path:
                sys.path.insert(0, str(Path.cwd()))  # `--fn myanalysis:fn` finds ./myanalysis.py
            module = importlib.import_module(where)
    except ConfigError:
        raise
    except Exception as err:
        raise ConfigError(f"--fn {spec!r}: cannot import {where}: {type(err).__name__}: {err}") from None
    fn = getattr(module, name, None)
    if not callable(fn):
        raise ConfigError(f"--fn {spec!r}: {where} has no function {name!r}")
    ship(fn)
    return fn


def ship(fn: Callable[..., Any]) -> None:
    """Make ``fn`` travel by value when the workers could not import its module."""
    import cloudpickle

    module = sys.modules.get(getattr(fn, "__module__", "") or "")
    if module is not None and module.__name__ != "__main__" and not _installed(module):
        cloudpickle.register_pickle_by_value(module)


def default_branches(fn: Callable[..., Any]) -> list[str] | None:
    """Branches the function's module declares (``BRANCHES``), used when ``--branches`` is not given."""
    module = sys.modules.get(getattr(fn, "__module__", "") or "")
    declared = getattr(fn, "branches", None) or getattr(module, "BRANCHES", None)
    return list(declared) if declared else None
