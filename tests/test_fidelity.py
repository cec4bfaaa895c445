"""The model against the pinned tree: every model function says where it comes from, and it is so.

The marks live on the functions (simulator/xen/fidelity.py); the README's table is generated
from them, and each upstream or glue function is checked against the pinned Xen sources in
../shared/xen when they are there.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from simulator.xen import fidelity

ROOT = Path(__file__).resolve().parents[1]
TREE = ROOT.parent / "shared" / "xen" / "xen-c447b7308b"


def test_every_model_function_has_a_row() -> None:
    assert fidelity.unmarked() == []


def test_the_readme_table_is_the_generated_one() -> None:
    readme = (ROOT / "README.md").read_text()
    m = re.search(r"<!-- fidelity:begin -->\n(.*?)\n<!-- fidelity:end -->", readme, re.S)
    assert m, "README.md has no fidelity table between the markers"
    assert m.group(1) == fidelity.markdown(), "README fidelity table is stale: python -m simulator.xen.fidelity"


def test_every_verdict_is_explained() -> None:
    for r in fidelity.rows():
        o = r.origin
        assert o.kind in (fidelity.UPSTREAM, fidelity.GLUE, fidelity.MODEL)
        if o.kind == fidelity.MODEL:
            assert o.differs, f"{r.method}: say why it is model plumbing"
        else:
            assert o.file and o.c_name, r.method


@pytest.mark.skipif(not TREE.is_dir(), reason="the pinned Xen sources (../shared/xen) are not beside the checkout")
def test_each_named_c_function_is_in_the_pinned_tree() -> None:
    corpus = None
    missing = []
    for r in fidelity.rows():
        o = r.origin
        if o.kind == fidelity.MODEL:
            continue
        f = TREE / o.file
        if f.is_file():
            if not re.search(rf"\b{re.escape(o.c_name)}\b", f.read_text(errors="replace")):
                missing.append(f"{r.module}.{r.method}: {o.c_name} not in {o.file}")
            continue
        # a file the pin does not hold (common/domain.c, ARM's mm.c): the name must be declared somewhere in it
        if corpus is None:
            corpus = "\n".join(p.read_text(errors="replace") for p in TREE.rglob("*.[ch]"))
        if not re.search(rf"\b{re.escape(o.c_name)}\b", corpus):
            missing.append(f"{r.module}.{r.method}: {o.c_name} nowhere in the pinned tree")
    assert missing == []
