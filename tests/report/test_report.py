"""``aldctl report``: the HTML parses, has every section and its images, and a real headless
chromium renders it without errors, with plots on its first screen."""

from __future__ import annotations

import base64
import io
import json
import re
import shutil
import subprocess
from collections.abc import Callable
from html.parser import HTMLParser
from pathlib import Path

import pytest

from aldctl.front.report import SECTIONS
from tests.conftest import CliResult
from tests.report.conftest import KINDS

MakeRun = Callable[[str], tuple[Path, str]]


class Page(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.sections: dict[str, int] = {}
        self.current: str | None = None
        self.images: list[tuple[str | None, str]] = []
        self.external: list[str] = []
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if tag == "section":
            self.current = a.get("id")
            self.sections[self.current or ""] = 0
        if tag == "img":
            self.images.append((self.current, a.get("src") or ""))
            if self.current:
                self.sections[self.current] += 1
        for k in ("src", "href"):
            v = a.get(k)
            if v and not v.startswith("data:") and not v.startswith("#"):
                self.external.append(v)

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def _report(run_cli: Callable[..., CliResult], data: Path, run_id: str, out: Path) -> Path:
    res = run_cli("report", run_id[:15], "--data-dir", str(data), "--out", str(out))
    assert res.code == 0, res.err
    path = out / f"{run_id}.html"
    assert res.out.strip() == f"report: {path}"
    return path


@pytest.mark.parametrize("kind", KINDS)
def test_the_report_has_every_section_and_its_figures(
    make_run: MakeRun, run_cli: Callable[..., CliResult], tmp_path: Path, kind: str
) -> None:
    from matplotlib.image import imread

    data, run_id = make_run(kind)
    path = _report(run_cli, data, run_id, tmp_path / "out")
    page = Page()
    page.feed(path.read_text(encoding="utf-8"))
    text = " ".join(page.text)
    assert list(page.sections) == [s for s, _ in SECTIONS if s != "recipe"] + ["recipe"]
    for sid in ("pressure", "response", "timing", "temperatures", "growth", "events"):
        assert page.sections[sid] >= 1, f"section {sid} has no figure"
    assert page.external == []  # self-contained: nothing to fetch
    for _, src in page.images:
        assert src.startswith("data:image/png;base64,")
        img = imread(io.BytesIO(base64.b64decode(src.split(",", 1)[1])))
        assert img.shape[0] > 100
        assert img.shape[1] > 300
    assert "pulse: {TMA: $tma_pulse}" in text  # the recipe as run
    if kind == "aborted":
        assert "aborted" in text
        assert "operator saw the TMA alarm" in text
        # a pressure window around the alarm, besides first/middle/last
        assert page.sections["pressure"] >= 4
        assert "TMA (in Al2O3 cycles): no pressure response" in text
    if kind == "held-and-resumed":
        assert re.search(r"holds\s*1,", text)
        assert "carrier flow" in text
    if kind == "crash-resumed":
        assert re.search(r"resumes\s*1\b", text)
        assert f"{24} / {24}" in text


def _chromium() -> str:
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    if exe is None:
        pytest.skip("chromium is not installed (.ci/run installs the Debian package)")
    return exe


CHECK = """<script>
addEventListener('load', () => {
  const imgs = [...document.images];
  const bad = imgs.filter(i => !i.complete || i.naturalWidth === 0).length;
  document.title = 'IMAGES ' + imgs.length + ' BROKEN ' + bad;
});
</script></body>"""


@pytest.mark.parametrize("kind", ["aborted", "held-and-resumed"])
def test_chromium_renders_the_report_with_plots_on_its_first_screen(
    make_run: MakeRun, run_cli: Callable[..., CliResult], tmp_path: Path, kind: str
) -> None:
    from matplotlib.image import imread

    exe = _chromium()
    data, run_id = make_run(kind)
    path = _report(run_cli, data, run_id, tmp_path / "out")
    base = [
        exe,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--hide-scrollbars",
        "--enable-logging=stderr",
        "--v=0",
        f"--user-data-dir={tmp_path / 'profile'}",
    ]
    shot = tmp_path / "first.png"
    res = subprocess.run(
        [*base, "--window-size=1280,1000", f"--screenshot={shot}", path.as_uri()],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert res.returncode == 0, res.stderr
    console = [ln for ln in res.stderr.splitlines() if "CONSOLE" in ln]
    assert console == []
    # Every image decoded, as the browser reports it (a test copy with a probe script).
    probe = tmp_path / "probe.html"
    probe.write_text(path.read_text(encoding="utf-8").replace("</body>", CHECK))
    dom = subprocess.run(
        [*base, "--dump-dom", probe.as_uri()],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    m = re.search(r"<title>IMAGES (\d+) BROKEN (\d+)</title>", dom.stdout)
    assert m is not None, dom.stderr[-2000:]
    assert int(m.group(1)) >= 8
    assert m.group(2) == "0"
    assert [ln for ln in dom.stderr.splitlines() if "CONSOLE" in ln] == []
    # The first screen shows a plot: the dark trace line and the coloured dose shading.
    img = imread(shot)[:, :, :3]
    h = img.shape[0]
    lower = img[h // 2 :]
    dark = (lower.max(axis=2) < 0.35).sum()
    r, g, b = lower[..., 0], lower[..., 1], lower[..., 2]
    blue = ((b - r > 0.15) & (b - g > 0.05)).sum()
    assert dark > 2000, "no plot lines on the first screen"
    assert blue > 200, "no dose shading on the first screen"


def test_the_pdf_report(
    make_run: MakeRun, run_cli: Callable[..., CliResult], tmp_path: Path
) -> None:
    data, run_id = make_run("completed")
    res = run_cli(
        "report", run_id, "--data-dir", str(data), "--out", str(tmp_path), "--format", "pdf"
    )
    assert res.code == 0, res.err
    pdf = (tmp_path / f"{run_id}.pdf").read_bytes()
    assert pdf.startswith(b"%PDF")
    assert pdf.count(b"/Type /Page\n") + pdf.count(b"/Type /Page ") >= 8


def test_runs_show_plot_writes_a_png(
    make_run: MakeRun, run_cli: Callable[..., CliResult], tmp_path: Path
) -> None:
    from matplotlib.image import imread

    data, run_id = make_run("completed")
    out = tmp_path / "o.png"
    res = run_cli("runs", "show", run_id, "--data-dir", str(data), "--plot", str(out))
    assert res.code == 0, res.err
    assert f"plot: {out}" in res.out
    assert "outcome: complete" in res.out
    assert re.search(r"diagnostics: TMA \(in Al2O3 cycles\): 24 seen, last (9\d|1\d\d)%", res.out)
    assert imread(out).shape[0] > 500


def test_a_report_of_an_unknown_run_is_one_error_line(
    make_run: MakeRun, run_cli: Callable[..., CliResult], tmp_path: Path
) -> None:
    data, _ = make_run("completed")
    res = run_cli("report", "19990101", "--data-dir", str(data), "--out", str(tmp_path))
    assert res.code == 2
    assert res.err.startswith("error: no run '19990101'")
    assert res.err.strip().splitlines()[1:] == ["1 error"]  # the CLI's count line
    assert list(tmp_path.glob("*.html")) == []


def test_a_resumed_run_counts_the_doses_of_every_session(make_run: MakeRun) -> None:
    import sqlite3

    from aldctl.session import dose_figures, prepare
    from tests.report.conftest import AL2O3, CYCLES

    data, run_id = make_run("crash-resumed")
    con = sqlite3.connect(data / "journal.sqlite")
    row = con.execute("SELECT summary FROM runs WHERE id=?", (run_id,)).fetchone()
    summary = json.loads(row[0])
    sessions = con.execute(
        "SELECT COUNT(DISTINCT session) FROM checkpoints WHERE run_id=?", (run_id,)
    ).fetchone()[0]
    tma = con.execute(
        "SELECT COUNT(*) FROM pulses WHERE run_id=? AND line='TMA'", (run_id,)
    ).fetchone()[0]
    con.close()
    assert sessions == 2
    grams, _ = dose_figures(prepare(AL2O3, None, [f"cycles={CYCLES}"]))
    left = summary["dose_watch"]["TMA (in Al2O3 cycles)"]["remaining_doses"]
    # 25 g (the built-in tool's source_mass) less every dose of both sessions
    assert left == int((25.0 - grams["TMA"] * tma) / grams["TMA"])
