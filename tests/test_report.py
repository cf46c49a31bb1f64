"""report.html: what `dpokd view` and a run's report stage write, loaded in a real headless Chromium.

The page's numbers are the leaderboard's, its filters show what the eval files say, a model's
hostile answer stays text, and an 8,200-answer run gives a page a browser loads in seconds.
"""

from __future__ import annotations

import json
import os
import shutil
import struct
import subprocess
import tempfile
import time
from html.parser import HTMLParser
from pathlib import Path

import pytest

from dpokd.scoring import eval_path

from .conftest import ROOT, run_cli
from .runs_on_disk import make_run

CHROMIUM = shutil.which("chromium")
needs_chromium = pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed (.ci/run installs it)")
VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "track", "wbr"}


# -- a DOM to look into ----------------------------------------------------------------------------
class Node:
    def __init__(self, tag: str, attrs: dict[str, str | None], parent: Node | None):
        self.tag, self.attrs, self.parent, self.children = tag, attrs, parent, []
        self.parts: list[str] = []

    @property
    def text(self) -> str:
        return "".join(p if isinstance(p, str) else p.text for p in self.parts)

    def iter(self):
        yield self
        for child in self.children:
            yield from child.iter()

    def find_all(self, tag: str | None = None, cls: str | None = None, **attrs: str) -> list[Node]:
        return [n for n in self.iter() if (tag is None or n.tag == tag)
                and (cls is None or cls in (n.attrs.get("class") or "").split())
                and all(n.attrs.get(k.replace("_", "-")) == v for k, v in attrs.items())]

    def visible(self) -> bool:
        node = self
        while node is not None:
            if "hidden" in node.attrs:
                return False
            node = node.parent
        return True


class _Builder(HTMLParser):
    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.root = self.current = Node("#document", {}, None)

    def handle_starttag(self, tag, attrs):
        node = Node(tag, dict(attrs), self.current)
        self.current.children.append(node)
        self.current.parts.append(node)
        if tag not in VOID:
            self.current = node

    def handle_endtag(self, tag):
        node = self.current
        while node is not None and node.tag != tag:
            node = node.parent
        if node is not None and node.parent is not None:
            self.current = node.parent

    def handle_data(self, data):
        self.current.parts.append(data)


def parse(html: str) -> Node:
    builder = _Builder()
    builder.feed(html)
    return builder.root


def chromium(args: list[str], home: Path, timeout: float = 120) -> subprocess.CompletedProcess:
    """Headless Chromium as FACTS.md found it to run here (root: no sandbox)."""
    # A profile of its own: a browser still exiting holds its profile's lock, and the quickstart's
    # folder is shared by the test workers.
    profile = tempfile.mkdtemp(prefix="chromium-profile-", dir=home)
    cmd = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
           f"--user-data-dir={profile}", "--virtual-time-budget=5000", *args]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    assert out.returncode == 0, out.stderr[-2000:]
    return out


def dump_dom(page: Path, home: Path, fragment: str = "") -> Node:
    return parse(chromium(["--dump-dom", page.resolve().as_uri() + fragment], home).stdout)


# -- what every report must be ---------------------------------------------------------------------
def leaderboard(run_dirs: list[Path], *extra: str) -> list[dict]:
    out = run_cli("leaderboard", *map(str, run_dirs), "--format", "json", *extra)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def assert_numbers_are_the_leaderboards(dom: Node, rows: list[dict]) -> None:
    """Every number of the report's leaderboard is the value `dpokd leaderboard --format json` gives."""
    shown = dom.find_all("tr", cls="lb-row")
    assert [(r.attrs["data-run"], r.attrs["data-system"]) for r in shown] == [(r["run"], r["system"]) for r in rows]
    checked = 0
    for tr, row in zip(shown, rows):
        for td in tr.find_all("td"):
            metric = td.attrs.get("data-metric")
            if metric is None:
                continue
            if "." in metric:
                key, field = metric.split(".")
                expected = (row.get(key) or {}).get(field)
            else:
                expected = row.get(metric)
            assert json.loads(td.attrs["data-value"]) == expected, (row["system"], metric)
            checked += expected is not None
    assert checked >= len(rows)


def assert_page_is_intact(dom: Node) -> None:
    """No script, handler or image but the report's own: nothing a model wrote became markup."""
    scripts = dom.find_all("script")
    assert [s.attrs.get("id") for s in scripts] == ["report-data", "report-js"]
    assert scripts[0].attrs.get("type") == "application/json"
    handlers = [(n.tag, a) for n in dom.iter() for a in n.attrs if a.lower().startswith("on")]
    assert handlers == []
    assert all(img.attrs.get("src", "").startswith("data:image/png;base64,") for img in dom.find_all("img"))
    assert dom.find_all("iframe") == [] and dom.find_all("object") == [] and dom.find_all("embed") == []
    assert "data-pwned" not in dom.find_all("body")[0].attrs
    assert "pwned" not in dom.find_all("title")[0].text
    # The page's script ran to its end: it counts the examples it shows.
    assert "examples shown" in dom.find_all(id="shown-count")[0].text


# -- hostile text ---------------------------------------------------------------------------------
HOSTILE = [
    "</script><script>alert(1)</script>",
    "</script><script>document.title='pwned'</script>",
    '<img src=x onerror="document.body.dataset.pwned=1">',
    "</pre></details><svg onload=\"document.body.dataset.pwned=1\"></svg>",
    "<!--<script>document.body.dataset.pwned=1</script>-->",
    "{{ 7*7 }} {% raw %}",
]
LONG_LINE = "x = '" + "A" * 100_000 + "'"


@needs_chromium
def test_hostile_answers_prompts_and_names_show_as_text(tmp_path):
    systems = ["teacher", "student@base", "student@iter_1"]

    def text(system, i, j):
        return LONG_LINE if i == len(HOSTILE) else HOSTILE[i % len(HOSTILE)] + f" from {system}"

    # A run name (a folder) may hold '<' and '>' too; it ends up in the page's JSON as a key.
    run = make_run(tmp_path / "r<!--<script>", systems=systems, problems=len(HOSTILE) + 1, iterations=1,
                   passes=lambda s, i, j: s == "teacher" or (s == "student@iter_1" and i % 2 == 0), text=text,
                   prompt=lambda i: HOSTILE[i % len(HOSTILE)], reason=lambda s, i: HOSTILE[(i + 1) % len(HOSTILE)])
    page = tmp_path / "report.html"
    out = run_cli("view", str(run), "-o", str(page))
    assert out.returncode == 0, out.stderr
    dom = dump_dom(page, tmp_path)
    assert_page_is_intact(dom)
    completions = [pre.text for pre in dom.find_all("pre", cls="completion")]
    for payload in HOSTILE:
        assert any(t.startswith(payload) for t in completions), payload
        assert any(p.text == payload for p in dom.find_all("pre", cls="prompt")), payload
        assert any(payload in r.text for r in dom.find_all("div", cls="reason")), payload
    # The 100 kB line is shown as text, clipped, with where to find the rest.
    longest = max(completions, key=len)
    assert longest == LONG_LINE[:20_000]
    assert f"{len(LONG_LINE) - 20_000} more characters in eval/execution-student@iter_1.jsonl" in dom.text
    data = json.loads(dom.find_all("script", id="report-data")[0].text)
    assert list(data["previous"]) == ["r<!--<script>"]
    assert_numbers_are_the_leaderboards(dom, leaderboard([run]))


def test_report_numbers_are_the_leaderboards_json(tmp_path):
    passing = {"teacher": range(32), "student@base": range(8), "student@iter_1": range(20),
               "student@iter_2": [*range(16), *range(20, 24)]}
    run = make_run(tmp_path / "r", systems=list(passing), problems=32, passes=lambda s, i, j: i in passing[s])
    for extra in ((), ("--against", "teacher")):
        out = run_cli("view", str(run), *extra)
        assert out.returncode == 0, out.stderr
        html = (run / "report.html").read_text()
        assert "http://" not in html and "https://" not in html  # nothing to fetch: it opens from a mail
        assert_numbers_are_the_leaderboards(parse(html), leaderboard([run], *extra))


def test_one_report_of_several_runs(tmp_path):
    runs = [make_run(tmp_path / name, systems=["teacher", "student@base", "student@iter_1"], problems=6, iterations=1,
                     passes=lambda s, i, j, k=k: s != "student@base" and i >= k) for k, name in enumerate(("a", "b"))]
    out = run_cli("view", *map(str, runs), "-o", str(tmp_path / "both.html"))
    assert out.returncode == 0, out.stderr
    dom = parse((tmp_path / "both.html").read_text())
    assert_numbers_are_the_leaderboards(dom, leaderboard(runs))
    assert {e.attrs["data-run"] for e in dom.find_all("details", cls="example")} == {"a", "b"}
    assert len(dom.find_all("details", cls="example")) == 12


def test_view_of_an_unfinished_run_is_a_clear_error(tmp_path):
    (tmp_path / "r").mkdir()
    out = run_cli("view", str(tmp_path / "r"))
    assert out.returncode == 2 and "no results.json" in out.stderr and "Traceback" not in out.stderr


# -- scale ----------------------------------------------------------------------------------------
CODE = '''def solve(numbers: list[int], threshold: float) -> bool:
    """Check whether any two numbers are closer to each other than the threshold."""
    for i, a in enumerate(numbers):
        for j, b in enumerate(numbers):
            if i != j and abs(a - b) < threshold:  # system {s}, problem {i}, sample {j}
                return True
    return False
'''


@needs_chromium
def test_a_164_problem_10_sample_5_system_run_gives_a_report_of_about_6_mib_that_chromium_loads(tmp_path):
    systems = ["teacher", "student@base", "student@iter_1", "student@iter_2", "student@iter_3"]
    rank = {s: n for n, s in enumerate(systems)}
    run = make_run(tmp_path / "big", systems=systems, problems=164, samples=10, judge="humaneval", iterations=3,
                   passes=lambda s, i, j: (i * 7 + j * 3) % 10 < 2 + 2 * rank[s],
                   text=lambda s, i, j: CODE.format(s=s, i=i, j=j),
                   prompt=lambda i: f"def solve(numbers: list[int], threshold: float) -> bool:\n    # problem {i}\n" * 4)
    start = time.monotonic()
    out = run_cli("view", str(run), "-o", str(tmp_path / "big.html"))
    written = time.monotonic() - start
    assert out.returncode == 0, out.stderr
    size = (tmp_path / "big.html").stat().st_size
    assert size < 6.5 * 2**20, size  # the README's figure: 6 MiB
    start = time.monotonic()
    dom = dump_dom(tmp_path / "big.html", tmp_path)
    loaded = time.monotonic() - start
    print(f"8,200 answers: report {size / 2**20:.1f} MiB written in {written:.1f} s, loaded by Chromium in {loaded:.1f} s")
    assert len(dom.find_all("div", cls="answer")) == 164 * 10 * 5
    assert dom.find_all(id="shown-count")[0].text == "164 of 164 examples shown"
    assert_numbers_are_the_leaderboards(dom, leaderboard([run]))


# -- a real run -----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def quickstart(quickstart_run):
    home, run, _ = quickstart_run
    return home, run


def _passed(run: Path, system: str) -> dict[str, bool]:
    rows = [json.loads(line) for line in eval_path(run, "execution", system).open()]
    return {r["example_id"]: r["value"] is True for r in rows}


def png_size(path: Path) -> tuple[int, int]:
    head = path.read_bytes()[:24]
    assert head[:8] == b"\x89PNG\r\n\x1a\n"
    return struct.unpack(">II", head[16:24])


@pytest.mark.slow
@needs_chromium
def test_the_quickstarts_report_in_chromium(quickstart):
    home, run = quickstart
    page = run / "report.html"
    assert page.exists()
    rows = leaderboard([run])
    dom = dump_dom(page, home)
    assert_page_is_intact(dom)
    assert_numbers_are_the_leaderboards(dom, rows)
    assert [r.attrs["data-system"] for r in dom.find_all("tr", cls="lb-row")] == [r["system"] for r in rows]
    # The curves, Δ with its CI and p, and a drill-down with the prompts the judge asked.
    assert dom.find_all("img", cls="curves")
    last = dom.find_all("tr", cls="lb-row", data_system=rows[-1]["system"])[0]
    cells = {td.attrs.get("data-metric"): td.text for td in last.find_all("td")}
    assert cells["vs_ref.delta"].startswith(("+", "-")) and "–" in cells["vs_ref.ci"] and cells["vs_ref.p"]
    examples = dom.find_all("details", cls="example")
    assert len(examples) == 32 and all(e.find_all("pre", cls="prompt")[0].text.strip() for e in examples)

    # Regressions and fixed, for every checkpoint, are exactly what the eval files say.
    checkpoints = [r["system"] for r in rows if r["system"].startswith("student@iter_")]
    for k, system in enumerate(checkpoints, 1):
        before, now = _passed(run, "student@base" if k == 1 else f"student@iter_{k - 1}"), _passed(run, system)
        for view, expected in (("regressions", {i for i in now if before[i] and not now[i]}),
                               ("fixed", {i for i in now if now[i] and not before[i]})):
            filtered = dump_dom(page, home, f"#view={view}&system={system.replace('@', '%40')}")
            shown = {e.attrs["data-id"] for e in filtered.find_all("details", cls="example") if e.visible()}
            assert shown == expected, (view, system)
            count = filtered.find_all(id="shown-count")[0].text
            assert count == f"{len(expected)} of 32 examples shown", count


@pytest.mark.slow
@needs_chromium
def test_a_screenshot_of_the_quickstarts_report(quickstart):
    home, run = quickstart
    shot = home / "report.png"
    chromium([f"--screenshot={shot}", "--window-size=1280,900", (run / "report.html").as_uri()], home)
    assert png_size(shot) == (1280, 900)
    if os.environ.get("DPOKD_UPDATE_SCREENSHOT"):
        shutil.copyfile(shot, ROOT / "docs" / "report.png")
