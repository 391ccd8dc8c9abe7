"""docs/settings.md's tables, from the three settings objects (the code is the source): run as
`.venv/bin/python scripts/settings-table.py > docs/settings.md`; tests/test_settings_doc.py fails when they differ."""

from __future__ import annotations

import inspect
import re

from pydantic import AliasChoices

from datalake.settings import Settings

CRASH_AT = (
    "| `DATALAKE_CRASH_AT` |  | tests only: `POINT[@N]` kills the process at a crash point (`datalake/faults.py`; "
    "read at each point, not through `Settings`, so a test can set it between runs) |"
)
HEAD = """# Settings

Every tunable and every `DATALAKE_*` variable, from the settings objects themselves (`scripts/settings-table.py`
writes this page; a test fails when it is out of date). Flags win over the environment; the environment over the
defaults. A bad value is one line naming the variable.

"""


def table() -> str:
    """docs/settings.md's tables, from the three settings objects."""
    from datalake.testbed.settings import TestbedSettings
    from datalake.transfer.config import ServiceSettings

    out = []
    for title, model, prefix in (
        ("The client, its workers and storage (`datalake.settings.Settings`)", Settings, "DATALAKE_"),
        ("The transfer service (`datalake.transfer.config.ServiceSettings`)", ServiceSettings, "DATALAKE_TRANSFER_"),
        ("The testbed (`datalake.testbed.settings.TestbedSettings`)", TestbedSettings, "DATALAKE_TESTBED_"),
    ):
        out += [f"## {title}", "", "| variable | default | what |", "| --- | --- | --- |"]
        comments = dict(re.findall(r"^    (\w+):[^#\n]*#\s*(.+)$", inspect.getsource(model), flags=re.M))
        for name, field in model.model_fields.items():
            alias = field.validation_alias
            names = list(alias.choices) if isinstance(alias, AliasChoices) else [f"{prefix}{name.upper()}"]
            default = "" if field.default is None or field.repr is False else f"`{field.default}`"
            if field.default_factory is not None:
                default = "(none)"
            what = (field.description or comments.get(name, "")).replace("|", "\\|")
            out.append(f"| {' / '.join(f'`{n}`' for n in names)} | {default} | {what} |")
        if model is Settings:
            out.append(CRASH_AT)
        out.append("")
    return "\n".join(out)


if __name__ == "__main__":
    print(HEAD + table(), end="")
