"""Variants: a proposed change to the model, as a Python file that overrides C-named methods.

A bug (engine/bugs.py) is a known-wrong mutation; a variant is a patch under
review.  A variant file calls ``register_variant(name, description, apply)``,
where ``apply(xen)`` replaces methods on one simulation's hypervisor instance,
as a C patch replaces functions.  ``p2msim run W --variant mine.py`` loads the
file (once per process), applies every variant it registered, then the bugs,
and checks each replacement before the run starts: an ``async`` model method
replaced by a plain function (or the other way round) is a one-line error
naming the method and the file:line of the replacement, not a ``TypeError``
deep inside a hypercall that looks like the workload's fault.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

from simulator.engine.userfile import UserFileError, import_file

if TYPE_CHECKING:
    from simulator.xen.hypervisor import Xen


class VariantError(Exception):
    """A variant file that cannot be used (exit code 2)."""


@dataclass(frozen=True)
class Variant:
    name: str
    description: str
    apply: Callable[[Xen], None]
    source: str = ""  # the file that registered it


VARIANTS: dict[str, Variant] = {}
_LOADED: dict[str, tuple[float, list[str]]] = {}  # resolved path -> (mtime, variants it registered)
_loading: list[str] = []  # the file being loaded, for register_variant's `source`


def register_variant(name: str, description: str, apply: Callable[[Xen], None]) -> Variant:
    """Register a variant (from a variant file): ``apply(xen)`` replaces methods on ``xen``."""
    if not callable(apply):
        raise VariantError(f"variant {name!r}: apply must be a function of the hypervisor, not {type(apply).__name__}")
    v = Variant(name, description, apply, _loading[-1] if _loading else "")
    VARIANTS[name] = v
    return v


def resolve(path: str) -> Path:
    """A path to a variant file, or the name of one shipped in workloads/variants/."""
    p = Path(path)
    if p.exists() or path.endswith(".py"):
        return p
    import workloads.variants

    shipped = Path(workloads.variants.__file__).parent / (path.replace("-", "_") + ".py")
    return shipped if shipped.is_file() else p


def load(path: str) -> list[Variant]:
    """The variants a file registers (importing it once per process, again if it changed)."""
    p = resolve(path)
    if not p.is_file():
        raise VariantError(f"variant file {path} does not exist" if not p.exists() else f"{path} is not a file")
    key = str(p.resolve())
    mtime = p.stat().st_mtime
    cached = _LOADED.get(key)
    if cached is None or cached[0] != mtime:
        before = set(VARIANTS)
        _loading.append(path)
        try:
            _import(p)
        finally:
            _loading.pop()
        names = [n for n in VARIANTS if n not in before or VARIANTS[n].source == path]
        if not names:
            raise VariantError(f"{path} registers no variant: call register_variant(name, description, apply)")
        _LOADED[key] = (mtime, names)
    return [VARIANTS[n] for n in _LOADED[key][1]]


def _import(p: Path) -> ModuleType:
    try:
        return import_file(p, "p2msim_variant")
    except UserFileError as exc:
        if isinstance(exc.__cause__, VariantError):
            raise exc.__cause__ from None  # register_variant's own complaint, as it is
        raise VariantError(f"{p}: {exc}") from None


def check_overrides(xen: Xen, what: str) -> None:
    """Every method replaced on the instance keeps its kind: async for async, plain for plain; and none
    of them is one a Xen tree's C provides (with --xen-tree the change belongs in the C)."""
    cls = type(xen)
    from_c = getattr(cls, "FROM_C", ())
    for name in from_c:
        if name in vars(xen):
            raise VariantError(
                f"{what} replaces {name}, which comes from the tree's C with --xen-tree: make the change in the "
                "tree's p2m.c instead (or run without --xen-tree)"
            )
    for name, value in vars(xen).items():
        original = getattr(cls, name, None)
        if original is None or not callable(original) or not callable(value):
            continue
        want_async = inspect.iscoroutinefunction(original)
        if want_async == inspect.iscoroutinefunction(value):
            continue
        where = _source_of(value)
        kind = "an async method, with a plain function" if want_async else "a plain method, with an async function"
        fix = "make it `async def` and await what it calls" if want_async else "make it a plain `def`"
        raise VariantError(f"{what} replaces {name}, {kind}{where}: {fix}")


def _source_of(fn: Any) -> str:
    code = getattr(fn, "__code__", None) or getattr(getattr(fn, "__func__", None), "__code__", None)
    return f" ({code.co_filename}:{code.co_firstlineno})" if code is not None else ""
