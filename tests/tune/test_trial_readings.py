"""What the tuning trial reads, as the real tool gives it: sparse, late or jittered readings
must measure what the simulated tool's dense, exact ones do."""

from __future__ import annotations

import math
import random
import sys
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import pytest

from aldctl.front import tunerun
from aldctl.session import prepare
from aldctl.tune.trial import residence_time
from tests.conftest import ROOT
from tests.tune.test_tune_real import FAST_PUMP, _driver_trial, fast_recipe

sys.path.insert(0, str(ROOT / "tests" / "hil"))
from test_fail_safe import InProcessServer, hil_config

TAU = 0.141
BASE = 0.184


def _decay(period: float, phase: float, span: float) -> tuple[list[float], list[float]]:
    """Readings of ``BASE + 1.06 exp(-t / TAU)`` every ``period`` from ``phase`` to ``span``."""
    ts = [phase + k * period for k in range(int((span - phase) / period) + 1)]
    return ts, [BASE + 1.06 * math.exp(-t / TAU) for t in ts]


@pytest.mark.parametrize(("period", "pre", "phase"), [(0.005, 20, 0.0), (0.056, 5, 0.02)])
def test_the_residence_time_does_not_take_on_the_error_of_a_base_read_too_early(
    period: float, pre: int, phase: float
) -> None:
    # After a long calibration pulse the purge (4 tau0) ends with the chamber ~2 % above its
    # base; the base the trial has averages readings before the pulse with the purge's last
    # quarter, so it sits above the chamber's. Before: the decay was fitted against it, and
    # the error depended on how many readings of each kind it had (the simulated tool's 20 +
    # 28 every 5 ms: 0.107-0.113 s; through the wire, 5 + 2: 0.116-0.121 s; truth 0.141 s).
    ts, ps = _decay(period, phase, 0.56)
    tail = [p for t, p in zip(ts, ps, strict=True) if t > 0.75 * 0.56]
    base = (BASE * pre + sum(tail)) / (pre + len(tail))
    assert base > BASE + 0.004
    assert residence_time(ts, ps, base) == pytest.approx(TAU, rel=0.01)


def test_the_residence_time_of_a_clean_decay_against_its_true_base() -> None:
    ts, ps = _decay(0.05, 0.0, 1.4)
    assert residence_time(ts, ps, BASE) == pytest.approx(TAU, rel=0.005)


def test_a_gauge_reading_is_dated_when_the_gauge_was_asked_even_behind_another_poll(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Once a second the safety monitor polls the gauge too; a trial reading asked for
    # meanwhile waits for the bus. Before: dated at the middle of its call, it sat 20-45 ms
    # away from when the gauge took it (the emulator takes the pressure as the request
    # arrives), one point per pulse, and moved the fitted residence time by +-10 %.
    import asyncio

    import sim.devices.pfeiffer as pf

    taken: list[float] = []
    raw = pf.PfeifferBus._raw_hpa

    def recording(self: Any, component: str) -> float:
        taken.append(time.monotonic())
        return raw(self, component)

    monkeypatch.setattr(pf.PfeifferBus, "_raw_hpa", recording)
    srv = InProcessServer(hil_config(tmp_path, FAST_PUMP), tmp_path / "state")
    try:

        def body(trial: Any) -> list[tuple[float, float]]:
            async def pairs() -> list[tuple[float, float]]:
                out = []
                gauge = trial.devices.gauge
                for k in range(12):
                    other = None
                    if k % 2:
                        # Another poll in flight first, as the monitor's is.
                        other = asyncio.ensure_future(gauge.read_pressure())
                        await asyncio.sleep(0)
                    called = time.monotonic()
                    t, _ = await trial._pressure()
                    returned = time.monotonic()
                    if other is not None:
                        await other
                    # The gauge's moment for this reading: the bus takes one request at a
                    # time, so it is the last taken during the call (another poll, the
                    # monitor's included, went before it).
                    mine = max(x for x in taken if called <= x <= returned)
                    out.append((t, mine - trial.t0))
                return out

            return trial._call(pairs())

        got, errors = _driver_trial(srv, fast_recipe(tmp_path), body)
    finally:
        srv.stop()
    assert errors == {}
    off = [1e3 * (t - true) for t, true in got]
    print("stamp - moment the gauge took it (ms):", " ".join(f"{x:.1f}" for x in off))
    # (before: 20-45 ms off; a loaded machine adds a few ms of its own to any one stamp)
    assert max(abs(x) for x in off) < 15.0, off


class _LateReads(tunerun._Trial):
    """The simulated tool with the QCM read as through the wire: three readings ~25 ms apart
    (the SQM-160's exchanges at 19200 baud), starting a random 0-100 ms late (behind other
    devices' polls), instead of the in-process 50 readings 0.1 s apart."""

    def __init__(self, prepared: Any, seed: int) -> None:
        super().__init__(prepared)
        self.rng = random.Random(seed)

    def qcm(self) -> float:
        r = self.r
        r.advance_by(round(self.rng.uniform(0.0, 0.1) * 1e9))
        vals = []
        for _ in range(3):  # the quick design's qcm_reads
            r.advance_by(25_000_000)
            vals.append(-r.read_qcm().frequency_hz)
        return sum(vals) / len(vals)


def test_the_growth_per_cycle_does_not_depend_on_when_the_qcm_readings_come(
    tmp_path: Path,
) -> None:
    # Before: the reading of a cycle came right after the co-reactant's pulse, while the
    # surface still reacted (0.26 Hz of a 3.1 Hz cycle in its first 0.15 s): a reading 0-100
    # ms late moved a cycle's growth by 2.1 % here (0.67 % now: the readings' noise).
    srv_cfg = hil_config(tmp_path, FAST_PUMP)
    recipe = fast_recipe(tmp_path)
    prepared = prepare(recipe, srv_cfg, ())
    ((_, doses),) = tunerun.all_cycle_doses(recipe)
    trial = _LateReads(prepared, seed=7)
    trial.setup()
    long = 5.0 * trial.residence_time_s()
    gains = tunerun._cycle_gains(trial, doses, [long, long], [0.075, 0.05], 0, 8)
    mean = sum(gains) / len(gains)
    spread = max(abs(g - mean) for g in gains) / mean
    print(f"growth per cycle {mean:.4f} Hz, largest deviation {spread:.2%}")
    assert spread < 0.01, gains


def _late_module_timer(monkeypatch: pytest.MonkeyPatch) -> None:
    """The emulated valve module's pulse-end timer fires 0.15 s late (its thread starved of
    the CPU); the pulse's true end is still the one the module computed."""
    import asyncio

    import sim.devices.modbus_dio as dio

    end_pulse = dio.ModbusDioModule._end_pulse

    def late(self: Any, ch: int, end: float) -> None:
        asyncio.get_running_loop().call_later(0.15, end_pulse, self, ch, end)

    monkeypatch.setattr(dio.ModbusDioModule, "_end_pulse", late)


def _on_a_late_timer(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    body: Callable[[Any, Any], Coroutine[Any, Any, Any]],
) -> Any:
    """``body(trial, plant)`` in a trial on the real drivers whose valve module's pulse
    timer fires late; its result (the trial must end without errors)."""
    _late_module_timer(monkeypatch)
    srv = InProcessServer(hil_config(tmp_path, FAST_PUMP), tmp_path / "state")
    plant = srv.server.plant
    try:
        result, errors = _driver_trial(
            srv, fast_recipe(tmp_path), lambda trial: trial._call(body(trial, plant))
        )
    finally:
        srv.stop()
    assert errors == {}
    return result


def test_a_module_timed_pulse_ends_in_the_model_on_time_when_the_emulators_timer_is_late(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A valve module times a pulse in hardware; the emulator's timer fires when its thread
    # gets the CPU. Before: on a starved CPU it fired tens of ms late while the gauge's and
    # the monitor's requests ran the model on with the valve still open, and a 10 ms TMA
    # pulse delivered two to three times its gas (the trial's calibration areas through the
    # wire jumped: 0.0067 then 0.0143 Torr s for the same 10 ms pulse, a dose off by +76 %).
    import asyncio

    async def pulse(trial: Any, plant: Any) -> tuple[bool, bool]:
        loop = asyncio.get_running_loop()
        bank, ch = trial.devices.valves["TMA"]
        for _ in range(5):
            await bank.pulse(ch, 0.04)
            sent = loop.time()
            await asyncio.sleep(0.02)
            during = plant.sync().read_valves()["TMA"]
            # a loaded machine may wake us past the pulse's end: that look proves
            # nothing either way, so pulse again
            in_pulse = loop.time() - sent < 0.03
            await asyncio.sleep(0.06)  # the pulse is over; the late timer has not fired
            after = plant.sync().read_valves()["TMA"]
            if in_pulse or after:
                break
            await asyncio.sleep(0.2)  # the late timers fire: the next pulse is clean
        return during, after

    during, after = _on_a_late_timer(tmp_path, monkeypatch, pulse)
    assert during, "the pulse never opened the valve"
    assert not after, "the model's valve stayed open past the module's pulse end"


def test_a_new_pulse_after_a_late_timer_does_not_drop_the_previous_pulses_end(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The emulator's timer is late and the line is pulsed again after the first pulse's
    # end: the module dropped that output at its end, so the model has two pulses. Before
    # (main 9389f7f) the second command cancelled the first pulse's end not yet made in the
    # model, and the model's valve stayed open from the first opening to the second end.
    import asyncio

    async def pulses(trial: Any, plant: Any) -> int:
        bank, ch = trial.devices.valves["TMA"]
        before = plant.sync().truth().valve_actuations["TMA"]
        await bank.pulse(ch, 0.04)
        await asyncio.sleep(0.07)  # over, but the late timer has not fired
        await bank.pulse(ch, 0.04)  # nothing asked the model in between
        await asyncio.sleep(0.3)
        return int(plant.sync().truth().valve_actuations["TMA"] - before)

    opened = _on_a_late_timer(tmp_path, monkeypatch, pulses)
    assert opened == 2  # two pulses in the model, not one long one


def test_a_module_timed_pulse_keeps_its_width_in_the_model_when_its_opening_comes_late(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The module's thread hands its edges to the model's loop; on a starved CPU other
    # requests have run the model past the frame's arrival by then, so the opening is made
    # late. The end, timed by the module, must move with it: a pulse ended at its module
    # time came out short by the hand-over's delay (the trial's doses through the wire -15 %).
    import asyncio

    import sim.devices.modbus_dio as dio
    from sim.reactor import Reactor

    hand_over = dio.ModbusDioModule._set_plant_valve

    def late(self: Any, line: str, on: bool, source: str, at: float) -> None:
        if on and source == "pulse":
            r = self.plant.sync()
            r.advance_to(r.now_ns + 20_000_000)  # other requests ran the model 20 ms on
        hand_over(self, line, on, source, at)

    # The valve's commands as the model gets them, on its own clock.
    edges: list[tuple[int, bool]] = []
    set_valve = Reactor.set_valve

    def model_edge(self: Reactor, line: str, is_open: bool) -> None:
        if line == "TMA":
            edges.append((self.now_ns, is_open))
        set_valve(self, line, is_open)

    monkeypatch.setattr(dio.ModbusDioModule, "_set_plant_valve", late)
    monkeypatch.setattr(Reactor, "set_valve", model_edge)
    srv = InProcessServer(hil_config(tmp_path, FAST_PUMP), tmp_path / "state")
    plant = srv.server.plant
    try:

        def body(trial: Any) -> None:
            async def pulse() -> None:
                bank, ch = trial.devices.valves["TMA"]
                await bank.pulse(ch, 0.06)
                await asyncio.sleep(0.3)
                plant.sync()

            trial._call(pulse())

        _, errors = _driver_trial(srv, fast_recipe(tmp_path), body)
    finally:
        srv.stop()
    assert errors == {}
    # The served reactor's last open and close (prepare()'s own simulated reactor came
    # first, on its own clock).
    assert len(edges) >= 2, edges
    assert edges[-2][1], edges
    assert not edges[-1][1], edges
    width = (edges[-1][0] - edges[-2][0]) / 1e9
    print(f"the model's valve commanded open for {width * 1e3:.1f} ms of a 60 ms pulse")
    assert width == pytest.approx(0.06, abs=0.002)
