"""The HTML report: what it draws, checked against the log, and the page in a real headless browser.

The browser tests use Debian's chromium + chromedriver.  On a machine without
them they are skipped, except in CI (CI=true), where `.ci/run` installs them
and a missing browser is a failure.  The tests that read the page's markup run
everywhere.
"""

from __future__ import annotations

import os
import re
import shutil
import struct
from pathlib import Path
from typing import Any

import orjson
import pytest

from simulator.cli import main as cli_main
from simulator.engine.log import LOG_SCHEMA_VERSION
from simulator.engine.logread import read_events
from simulator.engine.simulation import Config, run
from simulator.report import html as report

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")
SCREEN = (1280, 800)


def _inspect(log: Path, out: Path, *args: str) -> Path:
    assert cli_main(["inspect", str(log), "--format", "html", "-o", str(out), *args]) == 0
    return out


@pytest.fixture(scope="module")
def log(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("log") / "run.jsonl"
    r = run(Config("teardown-under-load", seed=0, bugs=("no-flush-before-table-free",), log=str(path)))
    assert len({v.hart for v in r.violations}) >= 2  # violations on more than one hart
    return path


@pytest.fixture(scope="module")
def events(log: Path) -> list[dict[str, Any]]:
    return list(read_events(log))


@pytest.fixture(scope="module")
def page(log: Path) -> Path:
    return _inspect(log, log.with_name("report.html"), "--violation", "1")


@pytest.fixture(scope="module")
def big(log: Path) -> Path:
    return _inspect(log, log.with_name("big.html"), "--violation", "1", "--from", "0", "--to", "100000")


def _violation(events: list[dict[str, Any]], n: int) -> dict[str, Any]:
    return next(e for e in events if e["event"] == "oracle.violation" and e["n"] == n)


def _svg(text: str, vid: str = "lanes") -> str:
    start = text.index(f'<svg id="{vid}"')
    return text[start : text.index("</svg>", start)]


def _attrs(tag: str) -> dict[str, str]:
    return dict(re.findall(r'([\w-]+)="([^"]*)"', tag))


def _tags(svg: str, cls: str) -> list[dict[str, str]]:
    return [_attrs(t) for t in re.findall(rf'<\w+ class="(?:[^"]* )?{cls}(?: [^"]*)?"[^>]*>', svg)]


def _end(tag: dict[str, str]) -> int | None:
    return int(tag["data-to"]) if tag["data-to"] else None  # empty: still open at the end of the window


def _window(svg: str) -> tuple[int, int]:
    a = _attrs(svg[: svg.index(">")])
    return int(a["data-lo"]), int(a["data-hi"])


def _stale_entry(events: list[dict[str, Any]], v: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """From the log itself: the violation's entry as filled at the chain's fill step, and its tlb.gone."""
    fill_step = next(c for c in v["chain"] if c["kind"] == "fill")
    fill = next(
        e
        for e in events
        if e["event"] == "tlb.fill"
        and (e["seq"], e["hart"]) == (fill_step["seq"], fill_step["hart"])
        and e["mfn"] == v["mfn"]
    )
    key = [fill[k] for k in ("leaf", "vmid", "level", "gfn", "mfn")]
    gone = next(
        e
        for e in events
        if e["event"] == "tlb.gone"
        and e["seq"] >= fill["seq"]
        and e["hart"] == fill["hart"]
        and [e[k] for k in ("leaf", "vmid", "level", "gfn", "mfn")] == key
    )
    return fill, gone


# -- the markup, against the log ------------------------------------------------------------------------------------


def test_the_page_is_self_contained(page: Path) -> None:
    text = page.read_text()
    assert "http://" not in text.replace("http://www.w3.org/2000/svg", "") and "https://" not in text
    assert "<script src" not in text and "<link" not in text


def test_the_stale_entry_lives_from_its_fill_to_its_removal(page: Path, events: list[dict[str, Any]]) -> None:
    v = _violation(events, 1)
    fill, gone = _stale_entry(events, v)
    svg = _svg(page.read_text())
    lo, hi = _window(svg)
    (stale,) = _tags(svg, "stale")
    assert (int(stale["data-hart"]), int(stale["data-from"]), int(stale["data-to"])) == (
        v["hart"],
        fill["seq"],
        gone["seq"],
    )
    assert lo <= fill["seq"] < gone["seq"] <= hi and stale["data-gone"] == "1"
    # coloured by what happened to what it reaches, in the chain's order: linked, unlinked, freed, reused
    steps = {c["kind"]: c["seq"] for c in v["chain"]}
    assert fill["seq"] < steps["unmap"] < steps["free"] < steps["reuse"] < steps["use"] <= gone["seq"]
    phases = [s["data-phase"] for s in _tags(svg, "stale-seg")]
    assert phases == ["cached", "unmap", "free", "reuse"]
    assert [int(m["data-seq"]) for m in _tags(svg, "marker")] == [steps["free"], steps["reuse"]]
    # violation 2 is another hart's: its entry is drawn on that hart's lane
    v2 = _violation(events, 2)
    assert v2["hart"] != v["hart"]
    page2 = _inspect(page.parent / "run.jsonl", page.with_name("v2.html"), "--violation", "2")
    (stale2,) = _tags(_svg(page2.read_text()), "stale")
    assert int(stale2["data-hart"]) == v2["hart"]
    fill2, gone2 = _stale_entry(events, v2)
    assert int(stale2["data-from"]) == fill2["seq"] and int(stale2["data-to"]) == gone2["seq"]
    _, hi2 = _window(_svg(page2.read_text()))
    # removed after the window: the bar runs to the window's edge, with an arrow, and says when it left
    assert gone2["seq"] > hi2 and "stale-more" in _svg(page2.read_text())
    assert f"{fill2['seq']:,}..{gone2['seq']:,}" in page2.read_text()


def test_residency_and_fences_are_those_of_the_log(page: Path, events: list[dict[str, Any]]) -> None:
    svg = _svg(page.read_text())
    lo, hi = _window(svg)
    want_bands, open_in = set(), {}
    for e in events:
        if e["event"] == "switch_in":
            open_in[e["hart"]] = e
        elif e["event"] == "switch_out" and e["hart"] in open_in:
            s = open_in.pop(e["hart"])
            if e["seq"] >= lo and s["seq"] <= hi:  # resident in the window; still resident at its end: open
                want_bands.add((s["hart"], s["dom"], s["vcpu"], s["seq"], e["seq"] if e["seq"] <= hi else None))
    want_bands |= {(s["hart"], s["dom"], s["vcpu"], s["seq"], None) for s in open_in.values() if s["seq"] <= hi}
    got_bands = {
        (int(b["data-hart"]), int(b["data-dom"]), int(b["data-vcpu"]), int(b["data-from"]), _end(b))
        for b in _tags(svg, "band")
    }
    assert got_bands == want_bands and len(want_bands) >= 4
    assert any(b[4] is None for b in want_bands) and any(b[4] is not None for b in want_bands)
    sent = {(e["id"], e["dst"]): e for e in events if e["event"] == "fence.sent"}
    want_fences = {  # in flight in the window; still in flight at its end: open
        (e["id"], e["src"], e["dst"], sent[(e["id"], e["dst"])]["seq"], e["seq"] if e["seq"] <= hi else None)
        for e in events
        if e["event"] == "fence.acked" and e["seq"] >= lo and sent[(e["id"], e["dst"])]["seq"] <= hi
    }
    got_fences = {
        (int(f["data-id"]), int(f["data-src"]), int(f["data-dst"]), int(f["data-from"]), _end(f))
        for f in _tags(svg, "fence-bar")
    }
    assert got_fences == want_fences and len(want_fences) >= 3
    # the fence that was in flight to the stale entry's hart when it was used
    v = _violation(events, 1)
    assert any(dst == v["hart"] and a < v["seq"] < (b or hi + 1) for _, _, dst, a, b in got_fences)


def test_a_capped_page_says_so_and_an_uncapped_one_does_not(page: Path, big: Path, events: list[dict]) -> None:
    lo, hi = _window(_svg(big.read_text()))
    assert (lo, hi) == (0, 100_000)
    total = sum(1 for e in events if lo <= e["seq"] <= hi and e["event"] not in ("run.start", "run.end"))
    assert total > report.MAX_EVENTS
    text = big.read_text()
    dots = len(_tags(_svg(text), "ev"))
    assert dots == report.MAX_EVENTS
    assert f"showing {dots:,} of {total:,} events; use --from/--to" in text
    # thinned evenly across the window, not cut off after the first 4,000
    seqs = sorted(float(d["cx"]) for d in _tags(_svg(text), "ev"))
    assert seqs[-1] - seqs[0] > 0.9 * (report.WIDTH - report.LEFT - report.RIGHT)
    # every fence of the window is still drawn, and the chain
    assert len(_tags(_svg(text), "fence-bar")) == sum(
        1 for e in events if e["event"] == "fence.acked" and e["seq"] <= hi
    )
    assert len(_tags(_svg(text), "chain")) == len(_violation(events, 1)["chain"])
    small = page.read_text()
    lo1, hi1 = _window(_svg(small))
    total1 = sum(1 for e in events if lo1 <= e["seq"] <= hi1 and e["event"] not in ("run.start", "run.end"))
    assert len(_tags(_svg(small), "ev")) == total1 < report.MAX_EVENTS
    assert "showing" not in small and 'id="capped"' not in small


def _synthetic_log(path: Path) -> Path:
    """A violation whose chain starts at step 3: its margin would put the window's start below 0."""
    h = "0x0"
    lines = [
        {"seq": 0, "hart": None, "event": "run.start", "v": LOG_SCHEMA_VERSION, "config": {"pcpus": 2}},
        {"seq": 1, "hart": 1, "event": "switch_in", "dom": 1, "vcpu": 0, "vmid": 1},
        {"seq": 3, "hart": 1, "event": "tlb.fill", "dom": 1, "leaf": True, "vmid": 1, "level": 0, "gfn": 5,
         "mfn": 9, "path": [7]},
        {"seq": 300, "hart": 0, "event": "pte.write", "table": 7, "idx": 5, "old": "0x2401", "new": h},
        {"seq": 301, "hart": 0, "event": "frame.free", "mfn": 9, "gen": 1, "to": "free", "why": "put_page"},
        {"seq": 350, "hart": 0, "event": "frame.hand_out", "mfn": 9, "gen": 2, "state": "domain", "owner": 2,
         "why": "alloc"},
        {"seq": 360, "hart": 0, "event": "fence.sent", "id": 1, "src": 0, "dst": 1, "vmid": None, "gfns": None},
        {
            "seq": 400,
            "hart": 1,
            "event": "oracle.violation",
            "n": 1,
            "cls": "reused-other-domain",
            "dom": 1,
            "gfn": 5,
            "mfn": 9,
            "headline": "stale",
            "missing": "no flush",
            "chain": [
                {"seq": 3, "hart": 1, "kind": "fill", "text": "fill"},
                {"seq": 300, "hart": 0, "kind": "unmap", "text": "unmap"},
                {"seq": 301, "hart": 0, "kind": "free", "text": "free"},
                {"seq": 350, "hart": 0, "kind": "reuse", "text": "reuse"},
                {"seq": 400, "hart": 1, "kind": "use", "text": "stale use"},
            ],
        },
        {"seq": 410, "hart": 1, "event": "fence.taken", "id": 1, "src": 0, "dst": 1, "vmid": None, "gfns": None},
        {"seq": 410, "hart": 1, "event": "tlb.gone", "leaf": True, "vmid": 1, "level": 0, "gfn": 5, "mfn": 9,
         "why": "fence", "fence": 1, "by": "a fence", "window": "reused-cached"},
        {"seq": 410, "hart": 1, "event": "fence.acked", "id": 1, "src": 0, "dst": 1, "vmid": None, "gfns": None},
        {"seq": 500, "hart": None, "event": "run.end", "stop": "done", "causes": [], "warnings": 0},
    ]  # fmt: skip
    path.write_bytes(b"".join(orjson.dumps(e) + b"\n" for e in lines))
    return path


def test_the_window_never_starts_below_step_0(tmp_path: Path) -> None:
    log = _synthetic_log(tmp_path / "early.jsonl")
    svg = _svg(_inspect(log, tmp_path / "early.html").read_text())
    lo, hi = _window(svg)
    margin = (400 - 3) // 20 + 1
    assert 3 - margin < 0 and lo == 0 and hi == 400 + margin  # unclamped, it would start at step -17
    assert ">step 0<" in svg and "step -" not in svg
    assert all(float(c["cx"]) >= report.LEFT for c in _tags(svg, "ev") + _tags(svg, "chain"))
    (stale,) = _tags(svg, "stale")
    assert (stale["data-from"], stale["data-to"]) == ("3", "410")
    (fence,) = _tags(svg, "fence-bar")
    assert (fence["data-from"], fence["data-to"]) == ("360", "410")
    # and a window asked for past the end of the log ends with the log, and says so
    svg2 = _svg(_inspect(log, tmp_path / "late.html", "--from", "100", "--to", "9000").read_text())
    assert _window(svg2) == (100, 500)
    assert "the log ends at step 500" in (tmp_path / "late.html").read_text()


# -- in a real browser ----------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    if not (CHROMIUM and CHROMEDRIVER):
        if os.environ.get("CI") == "true":
            pytest.fail("CI must have chromium and chromedriver (see .ci/run)", pytrace=False)
        pytest.skip("chromium/chromedriver not installed (apt-get install chromium chromium-driver)")
    webdriver = pytest.importorskip("selenium.webdriver")
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    opts = Options()
    opts.binary_location = CHROMIUM  # type: ignore[assignment]
    for flag in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--hide-scrollbars",
        f"--window-size={SCREEN[0]},{SCREEN[1]}",
        f"--user-data-dir={tmp_path_factory.mktemp('chrome')}",
    ):
        opts.add_argument(flag)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=opts)
    _screen(driver, *SCREEN)
    yield driver
    driver.quit()


def _screen(driver, width: int, height: int) -> None:  # type: ignore[no-untyped-def]
    """The viewport itself (not the window around it) at this size."""
    metrics = {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False}
    driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", metrics)


def _open(browser, page: Path) -> None:  # type: ignore[no-untyped-def]
    browser.get(page.as_uri())
    errors = [e for e in browser.get_log("browser") if e["level"] in ("SEVERE", "ERROR")]
    assert errors == [], errors
    assert browser.execute_script(
        "return [].every.call(document.querySelectorAll('svg.timeline'), s => s.dataset.laidOut === '1')"
    )


# every label of each timeline that is shown: its box on the screen, its lane's box
LABELS = """
return [].map.call(document.querySelectorAll('svg.timeline'), function (svg) {
  var lanes = {}, shown = [], hidden = 0;
  svg.querySelectorAll('g.lane').forEach(function (g) {
    lanes[g.dataset.hart === '' ? 'driver' : g.dataset.hart] = g.querySelector('rect').getBoundingClientRect();
  });
  svg.querySelectorAll('text').forEach(function (t) {
    if (getComputedStyle(t).display === 'none') { hidden++; return; }
    var r = t.getBoundingClientRect();
    shown.push({text: t.textContent, lane: t.dataset.lane || null, l: r.left, r: r.right, t: r.top, b: r.bottom});
  });
  var s = svg.getBoundingClientRect();
  return {id: svg.id, shown: shown, hidden: hidden, lanes: lanes, box: [s.left, s.right]};
});
"""


def _overlaps(shown: list[dict[str, Any]]) -> list[tuple[str, str]]:
    return [
        (a["text"], b["text"])
        for i, a in enumerate(shown)
        for b in shown[i + 1 :]
        if a["l"] < b["r"] and b["l"] < a["r"] and a["t"] < b["b"] and b["t"] < a["b"]
    ]


def _check_layout(browser) -> list[dict[str, Any]]:  # type: ignore[no-untyped-def]
    """No horizontal scroll; no two labels shown overlap; each inside its lane and the timeline."""
    width, client = browser.execute_script(
        "return [document.documentElement.scrollWidth, document.documentElement.clientWidth]"
    )
    assert client == SCREEN[0] and width <= client, (width, client)
    views = browser.execute_script(LABELS)
    for view in views:
        assert view["shown"], view["id"]
        assert _overlaps(view["shown"]) == [], view["id"]
        left, right = view["box"]
        for label in view["shown"]:
            assert left <= label["l"] and label["r"] <= right, label
            lane = view["lanes"].get(label["lane"] or "")
            if lane is not None:  # hart and driver lanes; the axis labels sit above them
                assert lane["top"] <= label["t"] and label["b"] <= lane["bottom"] + 0.5, label
    return views


def test_lanes_chain_and_hover_in_a_real_browser(page: Path, browser, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By

    _open(browser, page)
    lanes = browser.find_elements(By.CSS_SELECTOR, "#lanes g.lane")
    assert [lane.get_attribute("data-hart") for lane in lanes] == ["0", "1", "2", "3", ""]  # 4 harts + driver
    chain = browser.find_elements(By.CSS_SELECTOR, "#lanes circle.chain")
    kinds = [c.get_attribute("data-kind") for c in chain]
    assert kinds[0] == "fill" and kinds[-1] == "use" and {"unmap", "free", "reuse"} <= set(kinds)
    stroke = browser.execute_script("return getComputedStyle(arguments[0]).stroke", chain[0])
    assert stroke == "rgb(220, 38, 38)"  # highlighted in red
    assert len(browser.find_elements(By.CSS_SELECTOR, "#lanes circle.ev")) > 10
    assert len(browser.find_elements(By.CSS_SELECTOR, "#chain tr")) == len(chain) + 1
    assert "missing or late" in browser.find_element(By.CSS_SELECTOR, ".missing").text
    assert not browser.find_elements(By.ID, "capped")
    views = _check_layout(browser)
    assert [v["id"] for v in views] == ["lanes", "race"]  # the race is zoomed in below the whole window

    # the stale entry's bar, on the use's hart lane, runs from the fill's circle across the free and the reuse
    bar = browser.execute_script(
        """var g = document.querySelector('#lanes g.stale'), segs = g.querySelectorAll('rect');
        var a = segs[0].getBoundingClientRect(), b = segs[segs.length - 1].getBoundingClientRect();
        var lane = document.querySelector('#lanes g.lane[data-hart="' + g.dataset.hart + '"] rect');
        var m = [].map.call(document.querySelectorAll('#lanes line.marker'), l => l.getBoundingClientRect().left);
        var c = [].map.call(document.querySelectorAll('#lanes circle.chain'), e => e.getBoundingClientRect());
        return {left: a.left, right: b.right, top: a.top, lane: lane.getBoundingClientRect(), markers: m,
                fill: (c[0].left + c[0].right) / 2, use: (c[c.length - 1].left + c[c.length - 1].right) / 2};"""
    )
    assert abs(bar["left"] - bar["fill"]) < 1.5
    assert bar["left"] < bar["use"] < bar["right"]
    assert len(bar["markers"]) == 2 and all(bar["left"] < m < bar["right"] for m in bar["markers"])
    assert bar["lane"]["top"] < bar["top"] < bar["lane"]["bottom"]

    # hover over the stale use: the tooltip shows its fields
    ActionChains(browser).move_to_element(chain[-1]).perform()
    tip = browser.find_element(By.ID, "tip")
    assert tip.is_displayed() and "kind: use" in tip.text and "stale use" in tip.text
    # over the entry's bar: where it was cached and what removed it
    seg = browser.find_elements(By.CSS_SELECTOR, "#lanes rect.stale-seg")[0]
    ActionChains(browser).move_to_element(seg).perform()
    assert "stale entry: VMID 1 L1 gfn 0x40000" in tip.text and "removed:" in tip.text

    # screenshots: the first screen, and the whole page
    shot = tmp_path / "report.png"
    assert browser.save_screenshot(str(shot))
    data = shot.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    assert struct.unpack(">II", data[16:24]) == SCREEN and len(data) > 20_000
    full = browser.execute_script("return document.documentElement.scrollHeight")
    _screen(browser, SCREEN[0], full)
    try:
        assert browser.save_screenshot(str(tmp_path / "report-full.png"))
    finally:
        _screen(browser, *SCREEN)
    print(f"screenshots: {shot} {tmp_path / 'report-full.png'}")


def test_a_capped_window_in_a_real_browser(big: Path, browser, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By

    _open(browser, big)
    notice = browser.find_element(By.ID, "capped")
    assert notice.is_displayed() and re.search(r"showing 4,000 of [\d,]+ events; use --from/--to", notice.text)
    top = notice.rect["y"]
    assert 0 < top < SCREEN[1] - notice.rect["height"]  # on the first screen, without scrolling
    views = _check_layout(browser)
    whole = views[0]
    assert whole["hidden"] > 10  # many labels had no room: they are hidden, not drawn over each other
    # had they all been shown, they would have overlapped: the check above is not vacuous
    browser.execute_script("document.querySelectorAll('#lanes text.lbl.off').forEach(t => t.classList.remove('off'))")
    assert _overlaps(browser.execute_script(LABELS)[0]["shown"])
    _open(browser, big)

    # a hidden label is shown while the mouse is over what it names
    bar = browser.execute_script(
        """var b = [].find.call(document.querySelectorAll('#lanes rect.fence-bar'),
                 r => document.getElementById(r.dataset.lbl).classList.contains('off'));
           b.scrollIntoView({block: 'center'}); return b;"""
    )
    label = browser.find_element(By.ID, bar.get_attribute("data-lbl"))
    assert not label.is_displayed()
    ActionChains(browser).move_to_element(bar).perform()
    assert label.is_displayed() and label.text == f"#{bar.get_attribute('data-id')} " + (
        f"h{bar.get_attribute('data-src')}\u2192h{bar.get_attribute('data-dst')}"
    )
    ActionChains(browser).move_by_offset(0, 200).perform()
    assert not label.is_displayed()
    browser.execute_script("window.scrollTo(0, 0)")
    assert browser.save_screenshot(str(tmp_path / "big.png"))
    print(f"screenshot: {tmp_path / 'big.png'}")
