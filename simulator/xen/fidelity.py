"""Where each model function comes from, and how faithfully: kept on the functions themselves.

Every method of the hypervisor model carries one of three marks, so the
README's fidelity table (``python -m simulator.xen.fidelity``) and
``p2msim list --functions`` are generated from the code and cannot go stale:

* ``@upstream(file, differs=...)``: the function of that name in the Xen tree
  at c447b7308b; faithful unless ``differs`` says how it is not.  ``fixes``
  names the profile knobs whose ``fixed`` setting changes it.
* ``@glue(source, ...)``: the tree has no such code yet (a stub or nothing);
  the model takes it from ARM or common code, the same on every profile.
* ``@model(why)``: the model's own plumbing, no C counterpart.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

F = TypeVar("F", bound=Callable[..., Any])
UPSTREAM, GLUE, MODEL = "upstream", "glue", "model"
RISCV = "xen/arch/riscv/"


@dataclass(frozen=True)
class Origin:
    kind: str  # upstream, glue or model
    file: str  # upstream file (for glue: where the model takes it from)
    c_name: str  # the C function (or macro) it mirrors; "" for model plumbing
    differs: str = ""  # how it departs from the C, if it does
    fixes: tuple[str, ...] = ()  # profile knobs whose `fixed` setting changes it
    policies: tuple[str, ...] = ()  # policy knobs (off on every built-in profile) that change it

    @property
    def verdict(self) -> str:
        if self.kind == MODEL:
            return "model"
        if self.kind == GLUE:
            return "glue"
        return "differs" if self.differs else "faithful"


def _path(file: str) -> str:
    return file if file.startswith("xen/") else RISCV + file


def upstream(
    file: str, c_name: str = "", *, differs: str = "", fixes: tuple[str, ...] = (), policies: tuple[str, ...] = ()
) -> Callable[[F], F]:
    def mark(fn: F) -> F:
        fn.__upstream__ = Origin(UPSTREAM, _path(file), c_name or fn.__name__, differs, fixes, policies)  # type: ignore[attr-defined]
        return fn

    return mark


def glue(source: str, c_name: str = "", *, differs: str = "", fixes: tuple[str, ...] = ()) -> Callable[[F], F]:
    def mark(fn: F) -> F:
        fn.__upstream__ = Origin(GLUE, source, c_name or fn.__name__, differs, fixes)  # type: ignore[attr-defined]
        return fn

    return mark


def model(why: str) -> Callable[[F], F]:
    def mark(fn: F) -> F:
        fn.__upstream__ = Origin(MODEL, "", "", why)  # type: ignore[attr-defined]
        return fn

    return mark


@dataclass(frozen=True)
class Row:
    module: str
    cls: str
    method: str
    is_async: bool
    origin: Origin


def model_classes() -> list[type]:
    """The classes of simulator/xen whose methods are the model (the hypervisor's mixins and its heap)."""
    from simulator.xen.hypervisor import Xen
    from simulator.xen.page_alloc import Heap

    return [c for c in reversed(Xen.__mro__) if c.__module__.startswith("simulator.xen.")] + [Heap]


def unmarked() -> list[str]:
    """Methods defined in simulator/xen with no mark: each is a missing row."""
    missing = []
    for cls in model_classes():
        for name, fn in vars(cls).items():
            if name.startswith("__") or not inspect.isfunction(fn):
                continue
            if not hasattr(fn, "__upstream__"):
                missing.append(f"{cls.__module__}.{cls.__qualname__}.{name}")
    return missing


def rows() -> Iterator[Row]:
    for cls in model_classes():
        for name, fn in vars(cls).items():
            origin = getattr(fn, "__upstream__", None)
            if origin is not None and inspect.isfunction(fn):
                yield Row(
                    cls.__module__.rsplit(".", 1)[-1], cls.__qualname__, name, inspect.iscoroutinefunction(fn), origin
                )


def markdown() -> str:
    """The README's fidelity table."""
    out = [
        "| model (`simulator/xen/`) | async | upstream | verdict | how it differs, or where it comes from |",
        "|---|---|---|---|---|",
    ]
    for r in rows():
        o = r.origin
        where = f"`{o.file}` `{o.c_name}`" if o.kind != MODEL else "-"
        note = o.differs
        if o.fixes:
            note = (note + "; " if note else "") + "fixed: " + ", ".join(f"`{k}`" for k in o.fixes)
        if o.policies:
            note = (note + "; " if note else "") + "policy: " + ", ".join(f"`{k}`" for k in o.policies)
        out.append(f"| `{r.module}.{r.method}` | {'yes' if r.is_async else ''} | {where} | {o.verdict} | {note} |")
    return "\n".join(out)


def write_readme(path: str) -> None:
    """Replace the table between the README's fidelity markers with the generated one."""
    import re
    from pathlib import Path

    readme = Path(path)
    text = readme.read_text()
    begin, end = "<!-- fidelity:begin -->\n", "\n<!-- fidelity:end -->"
    new, n = re.subn(re.escape(begin) + r".*?" + re.escape(end), lambda _m: begin + markdown() + end, text, flags=re.S)
    if n != 1:
        raise SystemExit(f"{path}: no fidelity markers")
    readme.write_text(new)


if __name__ == "__main__":
    import sys

    if sys.argv[1:2] == ["--write"]:
        write_readme(sys.argv[2] if len(sys.argv) > 2 else "README.md")
    else:
        print(markdown())
