"""``aldctl report``: one self-contained HTML file (or a PDF) a process engineer can paste
into a lab notebook.

Sections: summary (recipe, parameters, tool, operator, outcome and reason, planned and
actual duration, resumes and holds); the recipe as run; chamber pressure over chosen
cycles (first, middle, last, around every alarm) with the doses marked; each dose's
pressure response across the run; commanded vs achieved pulse widths; temperatures and
flows; QCM mass per cycle and thickness against the expected growth line; alarms and
events on a timeline.

Figures are matplotlib (Agg), PNG embedded as base64: nothing is fetched when the file is
opened. They are drawn dark-on-white in white cards, which reads the same printed and on a
dark screen (the page itself follows the reader's colour scheme).

PDF: matplotlib's own PDF backend (``PdfPages``), not a browser's print of the HTML: it
needs nothing beyond matplotlib (no chromium on the lab PC), keeps the figures as vectors,
and gives one figure a page at a size meant for paper.
"""

from __future__ import annotations

import base64
import html
import io
import json
import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from aldctl.engine.journal import Journal

if TYPE_CHECKING:
    from matplotlib.figure import Figure

COLORS = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2")
MAX_POINTS = 20_000
"""Lines longer than this are decimated (min/max per bucket) before plotting."""

SECTIONS = (
    ("summary", "Summary"),
    ("recipe", "Recipe as run"),
    ("pressure", "Chamber pressure"),
    ("response", "Dose pressure response"),
    ("timing", "Pulse timing"),
    ("temperatures", "Temperatures and flows"),
    ("growth", "Growth"),
    ("events", "Alarms and events"),
)


@dataclass
class Data:
    """Everything a report draws, read from the journal in a few queries."""

    run: dict[str, Any]
    events: list[tuple[float, str, str | None, str]]
    checkpoints: list[tuple[int, str, float, float, int]]
    pulses: list[tuple[int | None, str, str, float, float, float, float, float | None]]
    samples: dict[str, tuple[list[float], list[float | None]]]
    plan: dict[str, Any] = field(default_factory=dict)

    @property
    def summary(self) -> dict[str, Any]:
        s = self.run.get("summary") or "{}"
        return dict(json.loads(s)) if isinstance(s, str) else dict(s)


FAULTS_WORDS = "simulator faults (aldctl run --fault), not a hardware failure: "


def load(journal: Journal, run_id: str) -> Data:
    full = journal.resolve(run_id)
    rec = journal.get(full)
    db = journal.db
    cur = db.execute(
        "SELECT id, recipe_path, recipe_name, recipe_text, overrides, params, config_path, tool,"
        " user, host, clock, realtime, started_at, ended_at, units_total, summary,"
        " aldctl_version FROM runs WHERE id=?",
        (full,),
    )
    names = [d[0] for d in cur.description]
    run = dict(zip(names, cur.fetchone(), strict=True))
    run["outcome"], run["reason"] = rec.outcome, rec.reason
    run["units_done"], run["process_s"] = rec.units_done, rec.process_s
    run["faults"] = rec.faults
    events = db.execute(
        "SELECT t, kind, state, message FROM events WHERE run_id=? ORDER BY seq", (full,)
    ).fetchall()
    cps = db.execute(
        "SELECT unit, label, t_start, t_end, session FROM checkpoints WHERE run_id=? ORDER BY unit",
        (full,),
    ).fetchall()
    pulses = db.execute(
        "SELECT unit, line, chemical, commanded_open, achieved_open, commanded_close,"
        " achieved_close, area_torr_s FROM pulses WHERE run_id=? ORDER BY rowid",
        (full,),
    ).fetchall()
    # One pass over the run's samples in time order (the journal indexes them by time),
    # split by channel; channels in name order, as the report always listed them.
    by_channel: dict[str, tuple[list[float], list[float | None]]] = {}
    for ch, t, v in db.execute(
        "SELECT channel, t, value FROM samples WHERE run_id=? ORDER BY t, rowid", (full,)
    ):
        if ch.startswith("rf."):  # RF power is in the events when it matters
            continue
        series = by_channel.get(ch)
        if series is None:
            series = by_channel[ch] = ([], [])
        series[0].append(t)
        series[1].append(v)
    samples = {ch: by_channel[ch] for ch in sorted(by_channel)}
    return Data(run, events, cps, pulses, samples, _plan(run))


def _plan(run: dict[str, Any]) -> dict[str, Any]:
    """The planned duration and growth, from the recipe (when it is still readable)."""
    from aldctl.recipe.plan import plan
    from aldctl.session import prepare

    try:
        cfg = Path(run["config_path"]) if run.get("config_path") else None
        p = prepare(Path(run["recipe_path"]), cfg, overrides=json.loads(run["overrides"]))
        pl = plan(p.compiled.schedule, p.tool)
    except Exception:
        return {}
    units = p.compiled.schedule.units
    return {
        "duration_s": pl.duration_s,
        "lower_bound": pl.lower_bound,
        "thickness_nm": pl.thickness_nm,
        "gpc_nm": (pl.thickness_nm / units) if pl.thickness_nm and units else None,
    }


# ---------------------------------------------------------------------- figures


def _fig(w: float = 9.0, h: float = 3.4) -> Figure:
    from matplotlib.figure import Figure

    # Fixed margins, not the constrained layout: that doubled the time a figure takes.
    fig = Figure(figsize=(w, h), dpi=100, facecolor="white")
    fig.subplots_adjust(left=0.085, right=0.97, bottom=0.16, top=0.9, wspace=0.25, hspace=0.3)
    return fig


def _style(ax: Any, xlabel: str, ylabel: str) -> None:
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(True, color="#dddddd", linewidth=0.6)
    ax.set_facecolor("white")


def _decimate(ts: list[float], vs: list[float | None]) -> tuple[list[float], list[float]]:
    pts = [(t, v) for t, v in zip(ts, vs, strict=True) if v is not None]
    if len(pts) <= MAX_POINTS:
        return [p[0] for p in pts], [p[1] for p in pts]
    step = math.ceil(len(pts) / (MAX_POINTS // 2))
    out_t: list[float] = []
    out_v: list[float] = []
    for i in range(0, len(pts), step):
        chunk = pts[i : i + step]
        lo = min(chunk, key=lambda p: p[1])
        hi = max(chunk, key=lambda p: p[1])
        for p in sorted((lo, hi)):
            out_t.append(p[0])
            out_v.append(p[1])
    return out_t, out_v


def _chem_colors(d: Data) -> dict[str, str]:
    chems = sorted({p[2] for p in d.pulses})
    return {c: COLORS[i % len(COLORS)] for i, c in enumerate(chems)}


def _windows(d: Data) -> list[tuple[str, float, float]]:
    """(title, t0, t1) of the pressure windows: first, middle, last unit; every alarm."""
    wins: list[tuple[str, float, float]] = []
    cps = d.checkpoints
    if cps:
        picks = {"first cycle": cps[0], "middle cycle": cps[len(cps) // 2], "last cycle": cps[-1]}
        seen: set[int] = set()
        for title, cp in picks.items():
            if cp[0] in seen:
                continue
            seen.add(cp[0])
            wins.append((f"{title} (unit {cp[0] + 1}, {cp[1]})", cp[2], cp[3]))
    span = (cps[0][3] - cps[0][2]) if cps else 20.0
    span = max(span, 5.0)
    last = -math.inf
    for t, kind, _, msg in d.events:
        if not kind.startswith("alarm.") or t - last < span:
            continue
        last = t
        short = msg if len(msg) < 70 else msg[:67] + "..."
        wins.append((f"{kind[6:]} at {t:.0f} s: {short}", t - span, t + span))
    return wins[:12]


def _in(
    ts: list[float], vs: list[float | None], t0: float, t1: float
) -> tuple[list[float], list[float]]:
    import bisect

    i, j = bisect.bisect_left(ts, t0), bisect.bisect_right(ts, t1)
    pts = [(t, v) for t, v in zip(ts[i:j], vs[i:j], strict=True) if v is not None]
    return [p[0] for p in pts], [p[1] for p in pts]


def fig_pressure(d: Data) -> Iterator[tuple[str, Figure]]:
    colors = _chem_colors(d)
    opens = sorted((p[4], p[6], p[2]) for p in d.pulses)
    import bisect

    starts = [o[0] for o in opens]
    for title, t0, t1 in _windows(d):
        fig = _fig(9.0, 2.8)
        ax = fig.add_subplot()
        drawn = False
        for ch, style, label in (
            ("trace.pressure", "-", "gauge, 50 ms"),
            ("pulse.pressure", "o", "after each dose"),
            ("pressure", "s", "safety poll"),
        ):
            if ch not in d.samples:
                continue
            ts, vs = _in(*d.samples[ch], t0, t1)
            if ts:
                drawn = True
                if style == "-":
                    ax.plot(ts, vs, "-", color="#333333", lw=1.0, label=label)
                else:
                    ax.plot(ts, vs, style, ms=3, color="#777777", label=label, alpha=0.8)
        i = bisect.bisect_left(starts, t0 - 5.0)
        marked: set[str] = set()
        for o, c, chem in opens[i:]:
            if o > t1:
                break
            if c < t0:
                continue
            ax.axvspan(
                o,
                max(c, o + (t1 - t0) * 0.006),
                color=colors[chem],
                alpha=0.35,
                label=None if chem in marked else f"{chem} dose",
            )
            marked.add(chem)
        ax.set_xlim(t0, t1)
        ax.ticklabel_format(axis="x", useOffset=False, style="plain")
        ax.set_title(title, fontsize=10, loc="left")
        _style(ax, "process time (s)", "pressure (Torr)")
        if drawn or marked:
            ax.legend(fontsize=7, loc="upper right", ncols=3)
        else:
            ax.text(0.5, 0.5, "no pressure recorded here", transform=ax.transAxes, ha="center")
        yield title, fig


def fig_response(d: Data) -> Figure:
    colors = _chem_colors(d)
    fig = _fig()
    ax = fig.add_subplot()
    by: dict[str, tuple[list[float], list[float]]] = {}
    for p in d.pulses:
        if p[7] is None or p[0] is None:
            continue
        xs, ys = by.setdefault(p[2], ([], []))
        xs.append(p[0] + 1)
        ys.append(p[7] * 1e3)
    for chem, (xs, ys) in sorted(by.items()):
        ax.plot(xs, ys, ".", ms=2.5, color=colors[chem], label=chem)
    _style(ax, "unit (cycle) of main", "pressure response (mTorr s)")
    if by:
        ax.legend(fontsize=8, markerscale=3)
    else:
        ax.text(0.5, 0.5, "no pressure responses recorded", transform=ax.transAxes, ha="center")
    return fig


def timing_stats(d: Data) -> dict[str, dict[str, float]]:
    """Per chemical: achieved minus commanded width, ms (p50, p99, max of |error|)."""
    by: dict[str, list[float]] = {}
    for p in d.pulses:
        err = ((p[6] - p[4]) - (p[5] - p[3])) * 1e3
        by.setdefault(p[2], []).append(err)
    out = {}
    for chem, errs in sorted(by.items()):
        a = sorted(abs(e) for e in errs)
        n = len(a)
        out[chem] = {
            "pulses": float(n),
            "p50": a[n // 2],
            "p99": a[min(n - 1, int(n * 0.99))],
            "max": a[-1],
        }
    return out


def fig_timing(d: Data) -> Figure:
    colors = _chem_colors(d)
    fig = _fig()
    ax1, ax2 = fig.subplots(1, 2)
    by: dict[str, tuple[list[float], list[float]]] = {}
    for p in d.pulses:
        cmd = (p[5] - p[3]) * 1e3
        ach = (p[6] - p[4]) * 1e3
        c, a = by.setdefault(p[2], ([], []))
        c.append(cmd)
        a.append(ach - cmd)
    for chem, (_, errs) in sorted(by.items()):
        ax1.hist(errs, bins=40, color=colors[chem], alpha=0.6, label=chem)
    _style(ax1, "achieved - commanded width (ms)", "pulses")
    for chem, (cmds, errs) in sorted(by.items()):
        ax2.plot(
            cmds,
            [c + e for c, e in zip(cmds, errs, strict=True)],
            "o",
            ms=3,
            color=colors[chem],
            label=chem,
        )
    lim = max((max(c) for c, _ in by.values()), default=1.0) * 1.1
    ax2.plot([0, lim], [0, lim], "--", color="#999999", lw=0.8, label="achieved = commanded")
    _style(ax2, "commanded width (ms)", "achieved width (ms)")
    if by:
        ax1.legend(fontsize=8)
        ax2.legend(fontsize=8)
    return fig


def fig_temps(d: Data) -> Figure:
    fig = _fig(9.0, 4.6)
    ax1, ax2 = fig.subplots(2, 1, sharex=True)
    n = 0
    for ch in sorted(c for c in d.samples if c.startswith("T.")):
        ts, vs = _decimate(*d.samples[ch])
        ax1.plot(ts, vs, "-", lw=1.2, color=COLORS[n % len(COLORS)], label=ch[2:])
        n += 1
    _style(ax1, "", "temperature (degC)")
    m = 0
    for ch in sorted(c for c in d.samples if c.startswith("F.")):
        ts, vs = _decimate(*d.samples[ch])
        if max(vs, default=0.0) < 0.5:  # a line that never flowed (plasma gases)
            continue
        ax2.plot(ts, vs, "-", lw=1.2, color=COLORS[m % len(COLORS)], label=ch[2:])
        m += 1
    _style(ax2, "process time (s)", "flow (sccm)")
    if n:
        ax1.legend(fontsize=8, ncols=4)
    if m:
        ax2.legend(fontsize=8, ncols=4)
    return fig


def growth(d: Data) -> tuple[list[int], list[float]]:
    """(unit, QCM thickness in nm at the unit's end) from the journaled QCM samples."""
    if "qcm" not in d.samples:
        return [], []
    import bisect

    ts, vs = d.samples["qcm"]
    units: list[int] = []
    nm: list[float] = []
    if d.checkpoints:
        i = bisect.bisect_right(ts, d.checkpoints[0][2]) - 1
        if i >= 0 and vs[i] is not None:
            units.append(d.checkpoints[0][0])
            nm.append(float(vs[i] or 0.0) / 10.0)
    for unit, _, _, t_end, _ in d.checkpoints:
        i = bisect.bisect_right(ts, t_end) - 1
        if i >= 0 and vs[i] is not None:
            units.append(unit + 1)
            nm.append(float(vs[i] or 0.0) / 10.0)
    return units, nm


def fig_growth(d: Data) -> Figure:
    fig = _fig()
    ax1, ax2 = fig.subplots(1, 2)
    units, nm = growth(d)
    if units:
        base = nm[0]
        ax2.plot(units, [x - base for x in nm], "-", color="#1f77b4", lw=1.5, label="QCM")
        steps = [(u, (b - a) * 10.0) for u, a, b in zip(units[1:], nm, nm[1:], strict=False)]
        ax1.plot([s[0] for s in steps], [s[1] for s in steps], ".", ms=3, color="#1f77b4")
    gpc = d.plan.get("gpc_nm")
    done = d.run.get("units_done") or 0
    if gpc:
        ax2.plot(
            [0, done],
            [0, gpc * done],
            "--",
            color="#d62728",
            lw=1.2,
            label=f"expected ({gpc * 10:.3g} A/cycle)",
        )
        ax1.axhline(gpc * 10, color="#d62728", ls="--", lw=1.0, label="expected")
    sim = d.summary.get("simulation") or {}
    if sim.get("thickness_nm") is not None and done:
        ax2.plot(
            [done],
            [sim["thickness_nm"]],
            "s",
            color="#2ca02c",
            label=f"simulated film {sim['thickness_nm']:.3g} nm",
        )
    _style(ax1, "unit (cycle) of main", "QCM mass step per cycle (A)")
    _style(ax2, "unit (cycle) of main", "thickness (nm)")
    ax2.legend(fontsize=8)
    if gpc:
        ax1.legend(fontsize=8)
    return fig


def fig_events(d: Data) -> Figure:
    fig = _fig(9.0, 2.6)
    ax = fig.add_subplot()
    rows = {
        "state": 0,
        "message": 1,
        "alarm.warning": 2,
        "alarm.alarm": 3,
        "alarm.hold": 4,
        "alarm.abort": 5,
    }
    colors = {0: "#1f77b4", 1: "#7f7f7f", 2: "#ff7f0e", 3: "#d62728", 4: "#9467bd", 5: "#000000"}
    for t, kind, _, _ in d.events:
        y = rows.get(kind, 1)
        ax.plot([t], [y], "|" if y < 2 else "v", ms=10, color=colors[y])
    for cp in d.checkpoints[:1]:
        ax.axvline(cp[2], color="#2ca02c", lw=0.8, ls=":")
    ax.set_yticks(list(rows.values()), [k.replace("alarm.", "") for k in rows])
    ax.set_ylim(-0.7, 5.7)
    _style(ax, "process time (s)", "")
    return fig


def png(fig: Figure) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, facecolor="white")
    return base64.b64encode(buf.getvalue()).decode("ascii")


# ---------------------------------------------------------------------- document

CSS = """
:root { color-scheme: light dark; --fg:#1b1b1b; --bg:#fafafa; --card:#ffffff; --mute:#666;
        --line:#ddd; --bad:#b00020; --warn:#a15c00; --ok:#1b6e20; }
@media (prefers-color-scheme: dark) {
  :root { --fg:#e8e8e8; --bg:#16181c; --card:#22252b; --mute:#a0a0a0; --line:#3a3d44;
          --bad:#ff6b7f; --warn:#ffb74d; --ok:#7bd88f; } }
body { font: 14px/1.45 system-ui, sans-serif; color: var(--fg); background: var(--bg);
       max-width: 1000px; margin: 0 auto; padding: 16px 20px; }
h1 { font-size: 22px; margin: 0 0 4px; } h2 { font-size: 17px; margin: 26px 0 8px;
     border-bottom: 1px solid var(--line); padding-bottom: 3px; }
.sub { color: var(--mute); margin-bottom: 12px; }
table { border-collapse: collapse; margin: 6px 0; }
td, th { padding: 2px 10px 2px 0; text-align: left; vertical-align: top; }
th { color: var(--mute); font-weight: 600; }
.fig { background: #fff; border-radius: 6px; padding: 4px; margin: 8px 0; }
.fig img { width: 100%; display: block; }
pre { background: var(--card); border: 1px solid var(--line); padding: 8px; overflow-x: auto;
      font-size: 12px; }
.outcome-complete { color: var(--ok); font-weight: 700; }
.outcome-aborted, .outcome-failed { color: var(--bad); font-weight: 700; }
.outcome-stopped { color: var(--warn); font-weight: 700; }
.kpi { display: flex; gap: 24px; flex-wrap: wrap; margin: 8px 0; }
.kpi div { background: var(--card); border: 1px solid var(--line); border-radius: 6px;
           padding: 6px 12px; } .kpi b { display: block; font-size: 18px; }
.alarm { color: var(--bad); } .warning { color: var(--warn); }
@media print { body { max-width: none; } .fig { break-inside: avoid; }
  details > pre { display: block; } }
"""


def _dur(s: float | None) -> str:
    if s is None:
        return "-"
    s = float(s)
    if s >= 3600:
        return f"{s / 3600:.2f} h"
    if s >= 60:
        return f"{s / 60:.1f} min"
    return f"{s:.1f} s"


def _ms(v: object) -> str:
    if not isinstance(v, int | float):
        return "-"
    # Virtual time has no timing error: its float residue is not a figure to print.
    return "< 0.001 ms" if v < 1e-3 else f"{v:.3g} ms"


def _e(x: object) -> str:
    return html.escape(str(x))


def _table(rows: list[tuple[str, str]]) -> str:
    return "<table>" + "".join(f"<tr><th>{k}</th><td>{v}</td></tr>" for k, v in rows) + "</table>"


def resumes_and_holds(d: Data) -> tuple[int, int, list[str]]:
    sessions = {cp[4] for cp in d.checkpoints}
    holds = [m for _, k, st, m in d.events if k == "state" and st == "held"]
    return max(0, len(sessions) - 1), len(holds), holds


def read_back_text(summary: dict[str, Any]) -> str:
    """What the read-back of the safe state (after teardown or an abort) found."""
    from aldctl.engine.runner import after_words

    if not summary.get("read_back"):
        return "not read back"
    after = after_words(summary["read_back"])
    nvs = summary.get("not_verified_safe") or {}
    if not nvs:
        return f"{after}: verified safe"
    return f"{after}: NOT verified safe: " + "; ".join(f"{k}: {v}" for k, v in nvs.items())


def _summary_html(d: Data) -> str:
    r = d.run
    s = d.summary
    resumes, nholds, holds = resumes_and_holds(d)
    planned = d.plan.get("duration_s")
    actual = r.get("process_s")
    bound = " (a lower bound: the recipe waits on conditions)" if d.plan.get("lower_bound") else ""
    timing = s.get("pulse_timing", {}).get("width_error_ms", {})
    params = r.get("params")
    params = json.loads(params) if isinstance(params, str) else params or {}
    sim = s.get("simulation") or {}
    kpis = [
        ("outcome", f'<span class="outcome-{_e(r["outcome"])}">{_e(r["outcome"])}</span>'),
        ("units of main", f"{r['units_done']} / {r['units_total']}"),
        ("cycles", _e(s.get("cycles_completed", "-"))),
        ("process time", _dur(actual)),
        (
            "thickness (simulated)",
            f"{sim['thickness_nm']:.3g} nm" if sim.get("thickness_nm") is not None else "-",
        ),
        ("width error p99", _ms(timing.get("p99")) if timing else "-"),
    ]
    rows = [
        ("recipe", f"{_e(r['recipe_name'])} <code>{_e(r['recipe_path'])}</code>"),
        ("parameters", _e(", ".join(f"{k}={v}" for k, v in params.items())) or "-"),
        ("overrides", _e(r.get("overrides") or "{}")),
        (
            "tool",
            _e(r["tool"])
            + (
                f" <code>{_e(r['config_path'])}</code>"
                if r.get("config_path")
                else " (built-in simulated reactor)"
            ),
        ),
        ("operator", f"{_e(r['user'])} on {_e(r['host'])}"),
        (
            "clock",
            # "virtual; virtual time" says it twice: the description alone when it says it
            _e(r["realtime"])
            if str(r["realtime"]).startswith(str(r["clock"]))
            else f"{_e(r['clock'])}; {_e(r['realtime'])}",
        ),
        ("started / ended", f"{_e(r['started_at'])} / {_e(r['ended_at'] or '-')}"),
        (
            "outcome",
            f'<span class="outcome-{_e(r["outcome"])}">{_e(r["outcome"])}</span>: '
            f"{_e(r['reason'])}",
        ),
        ("safe state read back", _e(read_back_text(s))),
        *(
            [("injected faults", _e(FAULTS_WORDS + ", ".join(r["faults"])))]
            if r.get("faults")
            else []
        ),
        (
            "duration",
            f"planned {_dur(planned)}{bound}, actual {_dur(actual)} of process time"
            f" ({_dur(s.get('wall_s'))} wall)",
        ),
        ("resumes", str(resumes)),
        (
            "holds",
            f"{nholds}, {_dur(s.get('held_s', 0.0))} held"
            + ("<br>" + "<br>".join(_e(h) for h in holds[:10]) if holds else ""),
        ),
        (
            "warnings",
            "<br>".join(f'<span class="warning">{_e(w)}</span>' for w in s.get("warnings", []))
            or "none",
        ),
        ("aldctl", _e(r.get("aldctl_version", ""))),
    ]
    k = "".join(f"<div>{a}<b>{b}</b></div>" for a, b in kpis)
    return f'<div class="kpi">{k}</div>' + _table(rows)


def _img(fig: Figure, alt: str) -> str:
    return f'<div class="fig"><img alt="{_e(alt)}" src="data:image/png;base64,{png(fig)}"></div>'


def html_report(d: Data) -> str:
    r = d.run
    parts: list[str] = []
    sec = dict(SECTIONS)
    parts.append(f'<section id="summary"><h2>{sec["summary"]}</h2>{_summary_html(d)}</section>')
    recipe_html = (
        f'<section id="recipe"><h2>{sec["recipe"]}</h2><details><summary>{_e(r["recipe_path"])}'
        f" ({len(r['recipe_text'].splitlines())} lines; printed in full)</summary>"
        f"<pre>{_e(r['recipe_text'])}</pre></details></section>"
    )
    figs = "".join(_img(f, t) for t, f in fig_pressure(d)) or (
        '<p class="sub">No cycle of main ran and no alarm came: no pressure to show.</p>'
    )
    parts.append(
        f'<section id="pressure"><h2>{sec["pressure"]}</h2><p class="sub">First, middle and '
        "last cycle, and around every alarm; shaded: the doses.</p>" + figs + "</section>"
    )
    dw = d.summary.get("dose_watch") or {}
    dw_rows = "".join(
        f"<tr><td>{_e(k)}</td><td>{v.get('seen')}</td>"
        f"<td>{_fmt(v.get('baseline'), 1e3 if _is_dose(k) else 1.0)}"
        f"{' A' if k.startswith('QCM') else ' Torr' if k.startswith('base') else ' mTorr s'}</td>"
        f"<td>{_pct(v.get('min_ratio'))}</td><td>{_pct(v.get('last_ratio'))}</td>"
        f"<td>{v.get('out_of_band')}</td><td>{_e(v.get('remaining_doses') or '-')}</td></tr>"
        for k, v in dw.items()
    )
    dw_table = (
        "<table><tr><th>dose</th><th>pulses</th><th>baseline</th><th>lowest</th>"
        f"<th>last</th><th>out of band</th><th>doses left</th></tr>{dw_rows}</table>"
        if dw_rows
        else ""
    )
    parts.append(
        f'<section id="response"><h2>{sec["response"]}</h2><p class="sub">Area of the chamber '
        "pressure above its level when the valve opened, per dose: a fading source or a slow "
        "valve shows as a falling line.</p>"
        + _img(fig_response(d), "dose response")
        + dw_table
        + "</section>"
    )
    ts = timing_stats(d)
    trows = "".join(
        f"<tr><td>{_e(c)}</td><td>{int(v['pulses'])}</td><td>{_ms(v['p50'])}</td>"
        f"<td>{_ms(v['p99'])}</td><td>{_ms(v['max'])}</td></tr>"
        for c, v in ts.items()
    )
    parts.append(
        f'<section id="timing"><h2>{sec["timing"]}</h2>'
        + _img(fig_timing(d), "pulse widths")
        + "<table><tr><th>chemical</th><th>pulses</th><th>|width error| p50</th>"
        f"<th>p99</th><th>max</th></tr>{trows}</table></section>"
    )
    parts.append(
        f'<section id="temperatures"><h2>{sec["temperatures"]}</h2>'
        + _img(fig_temps(d), "temperatures and flows")
        + "</section>"
    )
    parts.append(
        f'<section id="growth"><h2>{sec["growth"]}</h2><p class="sub">QCM mass step per cycle '
        "and thickness against the planned growth per cycle.</p>"
        + _img(fig_growth(d), "growth")
        + "</section>"
    )
    ev_rows = "".join(
        f'<tr class="{"alarm" if k.startswith("alarm.") and k != "alarm.warning" else ""}'
        f'{"warning" if k == "alarm.warning" else ""}"><td>{t:.1f}</td><td>{_e(k)}</td>'
        f"<td>{_e(m)}</td></tr>"
        for t, k, _, m in d.events
        if k != "message" or "->" in m
    )
    parts.append(
        f'<section id="events"><h2>{sec["events"]}</h2>'
        + _img(fig_events(d), "events")
        + f"<table><tr><th>t (s)</th><th>kind</th><th>what</th></tr>{ev_rows}</table></section>"
    )
    parts.append(recipe_html)
    title = f"Run {r['id']}: {r['recipe_name']}"
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{_e(title)}</title><style>{CSS}</style></head><body>"
        f'<h1>{_e(title)}</h1><div class="sub">aldctl run report, {_e(r["started_at"])}</div>'
        + "".join(parts)
        + "</body></html>\n"
    )


def _pct(v: object) -> str:
    return f"{max(0.0, float(v)):.0%}" if isinstance(v, int | float) else "-"


def _is_dose(name: str) -> bool:
    """A dose-watch track measured in Torr s (not a QCM step, not a base pressure)."""
    return not name.startswith(("QCM", "base pressure"))


def _fmt(v: object, scale: float) -> str:
    return f"{float(v) * scale:.3g}" if isinstance(v, int | float) else "-"


def pdf_report(d: Data, path: Path) -> None:
    from matplotlib.backends.backend_pdf import PdfPages

    with PdfPages(path) as pdf:
        first = _fig(8.27, 11.69)
        r = d.run
        s = d.summary
        resumes, nholds, _ = resumes_and_holds(d)
        lines = [
            f"Run {r['id']}: {r['recipe_name']}",
            "",
            f"outcome: {r['outcome']}: {r['reason']}",
            f"safe state read back: {read_back_text(s)}",
            *(
                [f"injected faults: {FAULTS_WORDS}{', '.join(r['faults'])}"]
                if r.get("faults")
                else []
            ),
            f"units of main: {r['units_done']} / {r['units_total']}",
            f"process time: {_dur(r['process_s'])} (planned {_dur(d.plan.get('duration_s'))})",
            f"resumes: {resumes}, holds: {nholds}",
            f"tool: {r['tool']}  operator: {r['user']}@{r['host']}",
            f"started {r['started_at']}, ended {r['ended_at']}",
            "",
            *(f"warning: {w}"[:110] for w in s.get("warnings", [])[:20]),
            "",
            "recipe:",
            *r["recipe_text"].splitlines()[:70],
        ]
        first.text(0.04, 0.97, "\n".join(lines), va="top", family="monospace", fontsize=7.5)
        pdf.savefig(first)
        for _, f in fig_pressure(d):
            pdf.savefig(f)
        for f in (fig_response(d), fig_timing(d), fig_temps(d), fig_growth(d), fig_events(d)):
            pdf.savefig(f)


def write(journal: Journal, run_id: str, out: Path, fmt: str = "html") -> Path:
    d = load(journal, run_id)
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{d.run['id']}.{fmt}"
    tmp = path.with_name(path.name + ".part")
    if fmt == "pdf":
        pdf_report(d, tmp)
    else:
        tmp.write_text(html_report(d), encoding="utf-8")
    tmp.replace(path)
    return path


def overview_png(journal: Journal, run_id: str, path: Path) -> Path:
    """``runs show --plot``: the response, growth and temperature figures in one PNG."""
    from matplotlib.figure import Figure

    d = load(journal, run_id)
    fig = Figure(figsize=(10, 9), dpi=90, facecolor="white", layout="constrained")
    subs = list(fig.subfigures(3, 1).flat)  # type: ignore[union-attr]
    for sub, make in zip(subs, (fig_response, fig_growth, fig_temps), strict=True):
        src = make(d)
        buf = io.BytesIO()
        src.savefig(buf, format="png", dpi=90, facecolor="white")
        buf.seek(0)
        import matplotlib.image as mpimg

        ax = sub.add_subplot()
        ax.imshow(mpimg.imread(buf))
        ax.axis("off")
    fig.suptitle(f"Run {d.run['id']}: {d.run['recipe_name']} ({d.run['outcome']})")
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, facecolor="white")
    return path
