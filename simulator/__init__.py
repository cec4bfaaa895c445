"""p2msim: a deterministic race hunter for Xen's RISC-V P2M (G-stage) page tables."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

if TYPE_CHECKING:
    from simulator.engine.simulation import Result


def run_workload(
    name_or_path: str,
    *,
    seed: int = 0,
    profile: str = "fixed",
    bugs: tuple[str, ...] | list[str] = (),
    strategy: str = "random",
    backend: str = "trio",
    log: str | None = None,
    **params: Any,
) -> Result:
    """Run one seeded race hunt and return its result (``.violations``, ``.explain()``).

    Keyword arguments that are not run options are the workload's parameters.
    """
    from simulator.engine.simulation import Config, run

    options = {k: params.pop(k) for k in list(params) if k in Config.__dataclass_fields__}
    cfg = Config(
        workload=name_or_path,
        seed=seed,
        profile=profile,
        bugs=tuple(bugs),
        strategy=strategy,
        backend=backend,
        log=log,
        params=tuple((k, str(v)) for k, v in sorted(params.items())),
        **options,
    )
    return run(cfg)


def register_variant(name: str, description: str, apply: Any) -> Any:
    """Register a variant: ``apply(xen)`` replaces C-named methods on one simulation's hypervisor, as a
    patch changes C functions.  Call it from a variant file; ``p2msim run W --variant FILE`` applies it."""
    from simulator.engine.variants import register_variant as register

    return register(name, description, apply)


__all__ = ["__version__", "register_variant", "run_workload"]
