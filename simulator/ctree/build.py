"""Build a Xen tree's p2m.c, paging.c and vmid.c into a shared library p2msim can run, once per distinct source.

The translation unit is the harness (``harness.h``), the tree's own
``include/asm/{p2m,paging,vmid}.h`` and ``{p2m,paging,vmid}.c`` with their ``#include`` lines blanked (so
``__FILE__:__LINE__`` of an ASSERT is the tree's), and ``harness_tail.c``, whose
entry points call p2m.c's static functions.  A probe call is put at the top of
``p2m_free_subtree`` on the line of its opening brace (no line moves), so the
log can say which metadata type a freed leaf had.  It is compiled with
``-finstrument-functions``: the C call stack is what explanations name.

The library is cached under ``$P2MSIM_CACHE`` (default ``~/.cache/p2msim``) by
a hash of everything that goes into it, the compiler's version included;
processes that build at the same time each write their own file and rename it.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
HARNESS = ("harness.h", "harness_domain.h", "harness_tail.c")
P2M_C = "arch/riscv/p2m.c"
P2M_H = "arch/riscv/include/asm/p2m.h"
PAGING_C = "arch/riscv/paging.c"
PAGING_H = "arch/riscv/include/asm/paging.h"
VMID_C = "arch/riscv/vmid.c"
VMID_H = "arch/riscv/include/asm/vmid.h"
SOURCES = (P2M_C, P2M_H, PAGING_C, PAGING_H, VMID_C, VMID_H)  # what is read from a tree
CFLAGS = (
    "-std=gnu11",
    "-O2",
    "-g",
    "-fPIC",
    "-shared",
    "-fno-strict-aliasing",
    "-finstrument-functions",
    "-finstrument-functions-exclude-file-list=harness",
    "-Werror=implicit-function-declaration",
    "-Werror=incompatible-pointer-types",
    "-Wno-unused-function",
    "-Wno-unused-variable",
    "-Wno-unused-but-set-variable",
)
PROBE = "harness_probe_free_subtree"
FORMAT = "p2msim-ctree-4"  # what the cache holds; a change here rebuilds every tree
_INCLUDE = re.compile(r"^[ \t]*#[ \t]*include\b.*$", re.M)


class CTreeError(Exception):
    """The tree cannot be used: one line that says what is wrong and what to do."""


@dataclass(frozen=True)
class Built:
    """A compiled tree: the library, the address (from its start) of each function, where it came from."""

    library: Path
    symbols: list[tuple[str, int]]  # (function, offset in the library): clones (.isra, .constprop) too
    tree: Path
    probe: bool  # p2m_free_subtree was found and carries the probe


def xen_dir(tree: str | Path) -> Path:
    """The tree's ``xen/`` directory: ``tree`` may be a Xen checkout or its ``xen/`` directory."""
    root = Path(tree).expanduser()
    if not root.exists():
        raise CTreeError(f"--xen-tree {tree}: no such directory")
    for cand in (root / "xen", root):
        if (cand / P2M_C).is_file():
            for rel in SOURCES:
                if not (cand / rel).is_file():
                    raise CTreeError(f"--xen-tree {tree}: {cand / rel} is missing")
            return cand.resolve()
    raise CTreeError(f"--xen-tree {tree}: not a Xen tree (no xen/{P2M_C} under it)")


def _blank_includes(text: str) -> str:
    return _INCLUDE.sub("", text)


# function -> (probe, its parameter types): the probe gets the function's arguments on entry
PROBES = {
    "p2m_free_subtree": (PROBE, "struct p2m_domain *, pte_t, const struct p2m_pte_ctx *"),
    "p2m_set_type": ("harness_probe_set_type", "pte_t *, p2m_type_t, const struct p2m_pte_ctx *"),
    "p2m_free_page": ("harness_probe_free_page", "struct p2m_domain *, struct page_info *"),
    # vmid.c: the model's step before the generation moves on (an instruction boundary: the hart may speculate)
    "vmid_flush_hart": ("harness_probe_flush_hart", "void"),
}


def _with_probe(source: str) -> tuple[str, bool]:
    """The source with each probe call on the line of its function's opening brace (a function not found,
    or with other parameters, gets none); whether p2m_free_subtree got its probe."""
    found = False
    for fn, (probe, types) in PROBES.items():
        m = re.search(rf"\b(?:static\s+)?void\s+{fn}\s*\(([^)]*)\)\s*\{{", source)
        if m is None:
            continue
        if types == "void":
            if m.group(1).strip() != "void":
                continue
            names = []
        else:
            names = [re.split(r"[\s*]+", p.strip())[-1] for p in m.group(1).split(",")]
            if len(names) != len(types.split(",")):
                continue
        call = f" extern void {probe}({types}); {probe}({', '.join(names)});"
        source = source[: m.end()] + call + source[m.end() :]
        found = found or fn == "p2m_free_subtree"
    return source, found


def translation_unit(xen: Path) -> tuple[str, bool]:
    """The C that is compiled (harness.h comes in through -include)."""
    p2m_h = _blank_includes((xen / P2M_H).read_text())
    paging_h = _blank_includes((xen / PAGING_H).read_text())
    p2m_c, probe = _with_probe(_blank_includes((xen / P2M_C).read_text()))
    paging_c = _blank_includes((xen / PAGING_C).read_text())
    vmid_h = _blank_includes((xen / VMID_H).read_text())
    vmid_c, _ = _with_probe(_blank_includes((xen / VMID_C).read_text()))
    return (
        f'#line 1 "xen/{P2M_H}"\n{p2m_h}\n'
        f'#line 1 "xen/{PAGING_H}"\n{paging_h}\n'
        f'#line 1 "xen/{VMID_H}"\n{vmid_h}\n'
        '#include "harness_domain.h"\n'
        f'#line 1 "xen/{P2M_C}"\n{p2m_c}\n'
        f'#line 1 "xen/{PAGING_C}"\n{paging_c}\n'
        f'#line 1 "xen/{VMID_C}"\n{vmid_c}\n'
        '#include "harness_tail.c"\n'
    ), probe


def compiler() -> str:
    cc = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")
    if not cc:
        raise CTreeError("--xen-tree needs a C compiler: no cc on PATH (install gcc, or set CC)")
    return cc


def cache_dir() -> Path:
    base = os.environ.get("P2MSIM_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "p2msim"
    )
    return Path(base) / "ctree"


def build(tree: str | Path) -> Built:
    """Compile ``tree``'s p2m.c with the harness (or reuse the cached library); CTreeError if it cannot."""
    xen = xen_dir(tree)
    cc = compiler()
    unit, probe = translation_unit(xen)
    try:
        version = subprocess.run([cc, "--version"], capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError) as exc:
        raise CTreeError(f"--xen-tree: the C compiler {cc} does not run: {exc}") from None
    h = hashlib.sha256()
    for part in (FORMAT, unit, version, " ".join(CFLAGS), *((HERE / n).read_text() for n in HARNESS)):
        h.update(part.encode())
        h.update(b"\0")
    out = cache_dir() / h.hexdigest()[:20]
    lib, syms = out / "libp2m.so", out / "symbols.json"
    if lib.is_file() and syms.is_file():
        return Built(lib, [(n, o) for n, o in json.loads(syms.read_text())], xen, probe)
    out.mkdir(parents=True, exist_ok=True)
    tmp = f".{os.getpid()}"
    src = out / "p2m_unit.c"
    (out / ("p2m_unit.c" + tmp)).write_text(unit)
    os.replace(out / ("p2m_unit.c" + tmp), src)
    cmd = [cc, *CFLAGS, "-I", str(HERE), "-include", "harness.h", "-o", str(lib) + tmp, str(src)]
    res = subprocess.run(cmd, capture_output=True, text=True)
    if res.returncode:
        (out / "build.log").write_text(" ".join(cmd) + "\n" + res.stderr)
        first = next((ln for ln in res.stderr.splitlines() if ": error:" in ln), res.stderr.strip()[:200])
        raise CTreeError(
            f"--xen-tree {tree}: the tree's p2m.c does not build with p2msim's harness: {first.strip()} "
            f"(full log: {out / 'build.log'})"
        )
    symbols = _symbols(Path(str(lib) + tmp))
    (out / ("symbols.json" + tmp)).write_text(json.dumps(symbols))
    os.replace(out / ("symbols.json" + tmp), syms)
    os.replace(str(lib) + tmp, lib)
    return Built(lib, symbols, xen, probe)


def _symbols(lib: Path) -> list[tuple[str, int]]:
    """Every function in the library (static ones too: the C stack names them) -> its offset."""
    nm = shutil.which("nm")
    if nm is None:
        raise CTreeError("--xen-tree needs nm (binutils) to name the C's functions: install binutils")
    res = subprocess.run([nm, "--defined-only", str(lib)], capture_output=True, text=True, check=True)
    out: list[tuple[str, int]] = []
    for line in res.stdout.splitlines():
        parts = line.split()
        if len(parts) == 3 and parts[1] in "tTwW":
            out.append((parts[2].split(".")[0], int(parts[0], 16)))
    return sorted(out)
