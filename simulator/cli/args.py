"""Argument types and the parser class every command shares: each bad value is a one-line error."""

from __future__ import annotations

import argparse
from typing import Any, NoReturn


class CliError(Exception):
    pass


class Help(argparse.HelpFormatter):
    """Every option's help ends with its default, when it has one worth saying."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        d = action.default
        if "default" in text or d in (None, False, "", [], argparse.SUPPRESS) or action.option_strings == []:
            return text
        return f"{text} (default: {d})" if text else f"(default: {d})"


class Parser(argparse.ArgumentParser):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", Help)
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> NoReturn:
        raise CliError(message)


INT_LIMIT = 1 << 63  # what the logs, arrays and JSON of a run hold


def positive(text: str) -> int:
    try:
        v = int(text, 0)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if v < 0:
        raise argparse.ArgumentTypeError(f"{text!r} must not be negative")
    if v >= INT_LIMIT:
        raise argparse.ArgumentTypeError(f"{text!r} is too large (at most 2^63 - 1)")
    return v


def at_least_one(text: str) -> int:
    v = positive(text)
    if v < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: at least 1")
    return v


def param(text: str) -> tuple[str, str]:
    if "=" not in text:
        raise argparse.ArgumentTypeError(f"{text!r} is not key=value")
    k, v = text.split("=", 1)
    return k.strip(), v.strip()


def seconds(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not v > 0 or v == float("inf"):
        raise argparse.ArgumentTypeError(f"{text!r}: a positive number of seconds")
    return v


XEN_TREE_HELP = (
    "a Xen tree (or its xen/ directory) whose own p2m.c, paging.c and vmid.c run as the hypervisor's (needs cc)"
)


def xen_tree_option(p: argparse.ArgumentParser, flag: str = "--xen-tree", help: str = XEN_TREE_HELP) -> None:
    """--xen-tree DIR (or --against-tree): the one definition every command that runs a tree's C shares."""
    p.add_argument(flag, metavar="DIR", default="", help=help)


def shared_config(args: argparse.Namespace) -> dict[str, Any]:
    """The Config fields `run` and `sweep` take from the same options (each adds its own to them)."""
    return {
        "workload": args.workload,
        "bugs": tuple(args.bug),
        "steps": args.steps,
        "mode": args.mode,
        "frames": args.frames,
        "backend": args.backend,
        "strict": args.strict,
        "params": tuple(args.param),
        "xen_opts": tuple(args.xen_opt),
        "debug_build": args.debug_build,
        "xen_tree": args.xen_tree,
        "ad": args.ad,
        "svinval": args.svinval,
        "variants": tuple(args.variant),
        "tlb_negative": args.tlb_negative,
        "tlb_multi": args.tlb_multi,
        "costs": getattr(args, "costs", ""),
    }
