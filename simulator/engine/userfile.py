"""A user's own Python file (a workload script, a variant), imported by path.

What goes wrong is the user's, so the error says where in their file:
``UserFileError`` carries the exception's text and the line of that file it
was raised from (the innermost frame in the file, not p2msim's).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType


class UserFileError(Exception):
    """The file could not be imported; ``str()`` is ``Type: message (line N)``."""


def import_file(path: Path, prefix: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"{prefix}_{path.stem}", path)
    if spec is None or spec.loader is None:
        raise UserFileError(f"{path} is not a Python file")
    mod = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(mod)
    except Exception as exc:
        raise UserFileError(f"{type(exc).__name__}: {exc}{_where(exc, path)}") from exc
    return mod


def _where(exc: BaseException, path: Path) -> str:
    tb, line = exc.__traceback__, None
    while tb is not None:
        if Path(tb.tb_frame.f_code.co_filename).resolve() == path.resolve():
            line = tb.tb_lineno
        tb = tb.tb_next
    return f" (line {line})" if line else ""
