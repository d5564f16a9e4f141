"""After an abort the safe state is read back, not assumed (as after teardown); and a dose
valve stuck open ends the run at once, naming the valve, instead of a 10-minute hold.

Every test here fails on main 3a00638: nothing was read back after an abort (exit 1 with
``not_verified_safe`` empty and no word of it in the journal), and a valve stuck open ended
as "hold timed out after 600 s"."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from aldctl.engine.events import Alarm, Message, StateChanged, UnitDone
from aldctl.engine.runner import RunResult

RECIPE = Path(__file__).resolve().parents[2] / "recipes" / "al2o3_tma_h2o.yaml"
TEARDOWN_AT = 505.0
"""Inside teardown's 30 s purge of the recipe at cycles=5 (it ends at 531 s)."""


def _run(run_cli: Callable[..., Any], tmp_path: Path, fault: str) -> tuple[Any, dict[str, Any]]:
    res = run_cli(
        "run",
        str(RECIPE),
        "--set",
        "cycles=5",
        "--fault",
        fault,
        "--json",
        "--data-dir",
        str(tmp_path),
    )
    return res, json.loads(res.out)


def stuck_open_after_the_first_unit(line: str) -> Callable[[Any], Any]:
    """A sim_run script: ``line``'s valve sticks open once the first unit is done."""

    async def script(h: Any) -> None:
        await h.until(lambda e: isinstance(e, UnitDone) and e.index == 1)
        h.sim.reactor.faults.inject("valve_stuck_open", line)

    return script


def test_an_abort_reads_the_safe_state_back_and_names_what_is_not_safe(
    tmp_path: Path, run_cli: Callable[..., Any]
) -> None:
    """The substrate heater's output welds on: the abort holds its setpoint, the heater
    climbs on regardless. The read-back says so; on 3a00638 nothing did."""
    res, out = _run(run_cli, tmp_path, "heater_runaway:substrate@200")
    assert res.code == 1
    assert out["outcome"] == "aborted"
    assert out["reason"].startswith("over-temperature on substrate")
    assert "the reactor is NOT verified safe after the abort (heater substrate" in out["reason"]
    assert "and rising" in out["not_verified_safe"]["substrate"]
    assert out["read_back"] == "abort"
    assert out["verified_safe"] is False
    shown = run_cli("runs", "show", out["run_id"], "--data-dir", str(tmp_path)).out
    assert "safe state read back after the abort: NOT verified safe:" in shown
    assert "the reactor is not verified safe after the abort" in shown  # the alarm event
    run_cli("report", out["run_id"], "--data-dir", str(tmp_path), "--out", str(tmp_path))
    report = (tmp_path / f"{out['run_id']}.html").read_text()
    assert "after the abort: NOT verified safe: substrate: heater substrate" in report


def test_an_abort_whose_safe_state_reads_back_clean_says_so(
    tmp_path: Path, run_cli: Callable[..., Any]
) -> None:
    res, out = _run(run_cli, tmp_path, "toxic_gas_alarm@200")
    assert res.code == 1
    assert out["outcome"] == "aborted"
    assert out["reason"].startswith("interlock toxic_gas_detector")
    assert "NOT verified" not in out["reason"]
    assert out["read_back"] == "abort"
    assert out["verified_safe"] is True
    assert out["not_verified_safe"] == {}
    # the read-back is not the recipe's time: the process time stops at the abort
    assert out["process_time_s"] < 201.0
    shown = run_cli("runs", "show", out["run_id"], "--data-dir", str(tmp_path)).out
    assert "safe state read back after the abort: verified safe" in shown
    assert "message        safe state read back after the abort: verified safe" in shown


def test_the_device_that_caused_the_abort_is_named_could_not_be_read(
    tmp_path: Path, run_cli: Callable[..., Any]
) -> None:
    """The gauge stops answering: the watchdog aborts, and the read-back tries it once
    more (bounded), reports it could not be read, and reads everything else."""
    res, out = _run(run_cli, tmp_path, "comm_timeout:chamber@200")
    assert res.code == 1
    assert out["reason"].startswith("device 'gauge' stopped answering")
    nvs = out["not_verified_safe"]
    assert list(nvs) == ["gauge"], nvs  # the rest read back safe
    assert nvs["gauge"].startswith("device 'gauge' could not be read (no answer")
    assert "NOT verified safe after the abort (device 'gauge' could not be read" in (out["reason"])


def test_a_driver_that_never_answers_cannot_hang_the_read_back(
    sim_run: Callable[..., tuple[RunResult, Any]],
) -> None:
    """A gauge driver without a timeout of its own (a fake: every driver here bounds its
    transactions, this one stands for one that does not) hangs for ever from cycle 3 on:
    the poll's guard aborts the run, and the read-back after it ends within its bound,
    naming the gauge, instead of waiting on it for ever."""
    seen: dict[str, float] = {}

    async def script(h: Any) -> None:
        await h.until(lambda e: isinstance(e, UnitDone) and e.index == 2)

        async def never() -> Any:
            await asyncio.Event().wait()

        h.tool.gauge.read_pressure = never
        ev = await h.until(lambda e: isinstance(e, StateChanged) and e.state.terminal)
        seen["aborted"] = ev.t

    result, h = sim_run(RECIPE, sets=("cycles=5",), script=script)
    assert result.outcome == "aborted", result.reason
    assert "device 'gauge' stopped answering" in result.reason
    assert result.read_back == "abort"
    assert list(result.not_verified_safe) == ["gauge"], result.not_verified_safe
    assert "could not be read (no answer within" in result.not_verified_safe["gauge"]
    ended = [e.t for e in h.events if isinstance(e, Alarm) and "after the abort" in e.message]
    # one bounded read (5 s) of the gauge, the rest of the tool read back meanwhile
    assert ended
    assert ended[-1] - seen["aborted"] < 15.0, (ended, seen)


def test_a_dose_valve_stuck_open_in_teardown_aborts_at_once_naming_it(
    tmp_path: Path, run_cli: Callable[..., Any]
) -> None:
    """TMA's valve sticks open in teardown's purge: the pressure hold closes every dose
    valve, reads them back, finds TMA still open and aborts, naming it (on 3a00638: held
    for 600 s, then "hold timed out"). The read-back after the abort still finds it open
    and the chamber above its hold limit: not verified safe, and the run says so."""
    res, out = _run(run_cli, tmp_path, f"valve_stuck_open:TMA@{TEARDOWN_AT:g}")
    assert res.code == 1
    assert out["outcome"] == "aborted"
    reason = out["reason"]
    assert reason.startswith("dose valve TMA stuck open"), reason
    assert "close the TMA source's manual valve" in reason
    assert "hold timed out" not in reason
    assert out["held_s"] < 5.0
    assert out["process_time_s"] < TEARDOWN_AT + 10.0
    nvs = out["not_verified_safe"]
    assert nvs["valve TMA"] == "dose valve TMA reads open"
    assert "chamber pressure" in nvs["pressure"]
    shown = run_cli("runs", "show", out["run_id"], "--data-dir", str(tmp_path)).out
    assert "alarm.abort" in shown
    assert "valve TMA: dose valve TMA stuck open" in shown


def test_a_dose_valve_stuck_open_mid_cycle_aborts_too(
    sim_run: Callable[..., tuple[RunResult, Any]],
) -> None:
    script = stuck_open_after_the_first_unit("H2O")

    result, h = sim_run(RECIPE, sets=("cycles=5",), script=script)
    assert result.outcome == "aborted"
    assert result.reason.startswith("dose valve H2O stuck open"), result.reason
    assert result.held_s < 5.0
    msgs = [e.text for e in h.events if isinstance(e, Message)]
    assert any(m.startswith("reading the safe state back") for m in msgs), msgs
    # The alarms name the line they found open, for the displays: a console draws H2O as
    # not closed beside ABORTED, not as closed (review of d1d9156: the synoptic drew what was
    # commanded, closed, while the run's own alarm said H2O did not close).
    flagged = {ln for e in h.events if isinstance(e, Alarm) for ln in e.lines}
    assert flagged == {"H2O"}, [e for e in h.events if isinstance(e, Alarm)]
    from aldctl.engine.opapi import RunStatus

    status = RunStatus(
        run_id="r", recipe="r", tool="t", units_total=5, planned_s=1.0,
        lines={"TMA": "TMA", "H2O": "H2O"},
    )  # fmt: skip
    for e in h.events:
        status.listener(e)
    snap = status.snapshot()
    assert snap["state"] == "aborted"
    assert snap["unclosed"] == ["H2O"]


def test_ctrl_c_during_the_read_back_still_records_the_outcome_and_stops_the_helpers(
    sim_run: Callable[..., Any], tmp_path: Path
) -> None:
    # Before the fix (main 9389f7f): a cancellation while the safe state was read back
    # escaped without the journal's outcome and left the safety monitor and the valve
    # heartbeat running.
    import pytest

    from aldctl.engine.events import UnitStarted
    from aldctl.engine.journal import Journal

    info: dict[str, Any] = {}

    async def script(h: Any) -> None:
        await h.until(lambda e: isinstance(e, UnitStarted) and e.index == 2)
        h.control.abort("operator abort", who="operator")
        await h.until(lambda e: isinstance(e, Message) and "reading the safe state back" in e.text)
        await asyncio.sleep(0.5)
        (run,) = [t for t in asyncio.all_tasks() if t.get_name() == "run"]
        run.cancel()
        await asyncio.sleep(5.0)
        info["alive"] = sorted(t.get_name() for t in asyncio.all_tasks() if not t.done())

    with pytest.raises(asyncio.CancelledError):
        sim_run(RECIPE, sets=("cycles=6",), script=script, data_dir=tmp_path / "data")
    helpers = {"safety-monitor", "valve-heartbeat", "pressure-trace", "pressure-watch"}
    assert not helpers & set(info["alive"]), info
    runs = Journal(tmp_path / "data").runs()
    assert runs[0].outcome == "aborted"
    assert "read-back was interrupted" in runs[0].reason


def test_the_read_back_after_an_abort_raises_no_further_abort_alarms(
    sim_run: Callable[..., tuple[RunResult, Any]],
) -> None:
    # Before (main 7de8b1a): H2O stuck open pushes the chamber over its 5 Torr maximum;
    # the hold's abort is the runner's own, so the control kept no abort reason, and the
    # monitor raised "chamber pressure ... above the 5 Torr limit" as a new abort alarm at
    # every poll of the 30 s read-back (30 of them in the journal and on every display).
    script = stuck_open_after_the_first_unit("H2O")

    result, h = sim_run(RECIPE, sets=("cycles=5",), script=script)
    assert result.reason.startswith("dose valve H2O stuck open"), result.reason
    aborts = [e for e in h.events if isinstance(e, Alarm) and e.severity == "abort"]
    assert [a.source for a in aborts] == ["valve H2O"], [a.message for a in aborts]
    # the read-back still names the chamber above its limits
    assert "chamber pressure" in result.not_verified_safe.get("pressure", ""), result.reason


def test_nothing_acts_on_the_hold_while_the_safe_state_is_read_back(
    sim_run: Callable[..., tuple[RunResult, Any]],
) -> None:
    # TMA stuck open keeps the chamber at ~4.3 Torr: above the 2 Torr hold limit, under the
    # 5 Torr maximum, for the whole 30 s read-back after the abort. The hold is over (the
    # run has aborted): neither its recover_within rule nor its release may speak then.
    script = stuck_open_after_the_first_unit("TMA")

    result, h = sim_run(RECIPE, sets=("cycles=5",), script=script)
    assert result.reason.startswith("dose valve TMA stuck open"), result.reason
    assert "chamber pressure" in result.not_verified_safe.get("pressure", ""), result.reason
    after = [
        e
        for e in h.events
        if isinstance(e, Alarm)
        and e.severity in ("abort", "hold", "warning")
        and e.source not in ("valve TMA",)
    ]
    assert [(a.severity, a.source) for a in after] == [("hold", "pressure")], [
        a.message for a in after
    ]
