"""A workload's parameters as its author wrote them: name, default, and the comment beside it.

The ``PARAMS`` dict literal is the one definition: ``p2msim list WORKLOAD``
shows each key with its default and the trailing comment on its line, so a
parameter is documented where it is declared, and nowhere else.
"""

from __future__ import annotations

import ast
import inspect
import io
import tokenize
from types import ModuleType
from typing import Any


def params(mod: ModuleType) -> list[tuple[str, Any, str]]:
    """(name, default, meaning) for each key of ``mod.PARAMS``, in the order written."""
    declared: dict[str, Any] = dict(getattr(mod, "PARAMS", {}) or {})
    if not declared:
        return []
    comments: dict[int, str] = {}
    lines: dict[str, int] = {}
    try:
        source = inspect.getsource(mod)
    except (OSError, TypeError):
        source = ""
    if source:
        for tok in tokenize.generate_tokens(io.StringIO(source).readline):
            if tok.type == tokenize.COMMENT:
                comments[tok.start[0]] = tok.string.lstrip("#").strip()
        for node in ast.walk(ast.parse(source)):
            targets = node.targets if isinstance(node, ast.Assign) else [getattr(node, "target", None)]
            if any(isinstance(t, ast.Name) and t.id == "PARAMS" for t in targets) and isinstance(
                getattr(node, "value", None), ast.Dict
            ):
                for k in node.value.keys:  # type: ignore[union-attr]
                    if isinstance(k, ast.Constant) and isinstance(k.value, str):
                        lines[k.value] = k.lineno
    return [(k, v, comments.get(lines.get(k, -1), "")) for k, v in declared.items()]
