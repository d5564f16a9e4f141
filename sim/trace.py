"""Fixed-interval trace of a reactor's truth and measured channels, streamed out.

A :class:`TraceRecorder` attaches to a :class:`~sim.reactor.Reactor` and is sampled by it at
exact virtual times ``k * interval_ns`` (the sample times are events of the model, so a
sample sees the state at that instant, not at the end of a step). Each row goes to a
callback and/or a CSV file as it is taken; nothing accumulates in memory.

Measured channels in a trace draw their noise from the recorder's own seeded streams
(``"{seed}:trace:{device}"``) so that tracing never changes what the control software reads.

Channel names:

=========================  ==================================================
``t_s``                    virtual time, s
``pressure_torr``          true total pressure
``p:<species>``            true partial pressure (e.g. ``p:TMA``), Torr
``T:<heater>``             true temperature, degC
``thickness_a``            true thickness; also ``ald_thickness_a``, ``cvd_thickness_a``
``mass_ng_cm2``            true areal mass
``coverage:<state>``       surface fraction in a state (``coverage:ready``)
``valve:<line>``           true valve opening 0..1
``m:pressure_torr``        gauge reading (empty when over range)
``m:T:<heater>``           controller PV (empty on sensor break)
``m:out:<heater>``         controller output, %
``m:mfc:<name>``           MFC flow reading, sccm
``m:qcm:thickness_a``      QCM thickness; also ``m:qcm:frequency_hz``, ``m:qcm:rate_a_s``
``m:rf:forward_w``         RF forward power; also ``m:rf:reflected_w``
``m:ozone:pct``            ozone concentration reading
=========================  ==================================================
"""

from __future__ import annotations

import csv
import random
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

if TYPE_CHECKING:
    from sim.reactor import Reactor

Row = dict[str, float | None]

DEFAULT_CHANNELS = (
    "t_s",
    "pressure_torr",
    "m:pressure_torr",
    "thickness_a",
    "mass_ng_cm2",
    "T:substrate",
)


class TraceRecorder:
    """Samples ``channels`` every ``interval_ns`` of virtual time into ``sink``/``csv_path``.

    Use as a context manager or call :meth:`close` to detach and flush the file.
    """

    def __init__(
        self,
        reactor: Reactor,
        interval_ns: int,
        channels: Sequence[str] = DEFAULT_CHANNELS,
        *,
        sink: Callable[[Row], None] | None = None,
        csv_path: str | Path | None = None,
    ) -> None:
        if interval_ns <= 0:
            msg = "interval_ns must be > 0"
            raise ValueError(msg)
        if sink is None and csv_path is None:
            msg = "give a sink callback, a csv_path, or both"
            raise ValueError(msg)
        self.reactor = reactor
        self.interval_ns = interval_ns
        self.channels = tuple(channels)
        self._check_channels()
        self._sink = sink
        self._file: TextIO | None = None
        self._writer: Any = None  # csv's writer type is private
        if csv_path is not None:
            # stays open for the recorder's life; close() releases it
            self._file = Path(csv_path).open("w", newline="", encoding="utf-8")  # noqa: SIM115
            self._writer = csv.writer(self._file)
            self._writer.writerow(self.channels)
        self._rngs: dict[str, random.Random] = {}
        self.rows = 0
        self.next_sample_ns = (reactor.now_ns // interval_ns) * interval_ns
        if self.next_sample_ns < reactor.now_ns:
            self.next_sample_ns += interval_ns
        reactor.add_trace(self)

    def __enter__(self) -> TraceRecorder:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Detach from the reactor and close the CSV file."""
        self.reactor.remove_trace(self)
        if self._file is not None:
            self._file.close()
            self._file = None
            self._writer = None

    # -- called by the reactor
    def _sample(self, reactor: Reactor) -> None:
        row = {ch: self._value(reactor, ch) for ch in self.channels}
        self.rows += 1
        if self._sink is not None:
            self._sink(row)
        if self._writer is not None:
            self._writer.writerow(["" if v is None else repr(v) for v in row.values()])
        self.next_sample_ns += self.interval_ns

    def _on_restore(self, now_ns: int) -> None:
        self.next_sample_ns = (now_ns // self.interval_ns) * self.interval_ns
        if self.next_sample_ns < now_ns:
            self.next_sample_ns += self.interval_ns

    # -- channels
    def _rng(self, device: str) -> random.Random:
        rng = self._rngs.get(device)
        if rng is None:
            rng = random.Random(f"{self.reactor.seed}:trace:{device}")
            self._rngs[device] = rng
        return rng

    def _check_channels(self) -> None:
        r = self.reactor
        bad: list[str] = []
        states = set(r.chemistry.states)
        for ch in self.channels:
            kind, _, name = ch.partition(":")
            ok = ch in {
                "t_s",
                "pressure_torr",
                "thickness_a",
                "ald_thickness_a",
                "cvd_thickness_a",
                "mass_ng_cm2",
                "m:pressure_torr",
                "m:qcm:thickness_a",
                "m:qcm:frequency_hz",
                "m:qcm:rate_a_s",
                "m:rf:forward_w",
                "m:rf:reflected_w",
                "m:ozone:pct",
            }
            if not ok:
                if kind == "p":
                    ok = name in r.species
                elif kind == "T":
                    ok = name in r.heaters
                elif kind == "coverage":
                    ok = name in states
                elif kind == "valve":
                    ok = name in r.lines
                elif kind == "m":
                    sub, _, dev = name.partition(":")
                    ok = (sub in ("T", "out") and dev in r.heaters) or (
                        sub == "mfc" and dev in r.mfcs
                    )
            if not ok:
                bad.append(ch)
        if bad:
            msg = f"unknown trace channel(s) {bad}"
            raise ValueError(msg)

    def _value(self, r: Reactor, ch: str) -> float | None:
        s = r._s
        rt = r._rt
        if ch == "t_s":
            return s.now / 1e9
        if ch == "pressure_torr":
            return rt.p_per_mol * sum(s.n)
        if ch == "thickness_a":
            return s.thickness
        if ch == "ald_thickness_a":
            return s.thickness - s.cvd
        if ch == "cvd_thickness_a":
            return s.cvd
        if ch == "mass_ng_cm2":
            return s.mass_ng
        if ch == "m:pressure_torr":
            return s.gauge.measured(s.now, self._rng(r.config.gauge.name))
        if ch.startswith("m:qcm:"):
            q = r._read_qcm(self._rng("qcm"), update_rate=False)
            return float(getattr(q, ch[len("m:qcm:") :]))
        if ch.startswith("m:rf:"):
            pl = r._read_plasma(self._rng("rf"))
            return float(getattr(pl, ch[len("m:rf:") :]))
        if ch == "m:ozone:pct":
            return r._read_ozone(self._rng("ozone")).concentration_pct
        kind, _, name = ch.partition(":")
        if kind == "p":
            return s.n[r.species.index(name)] * rt.p_per_mol
        if kind == "T":
            h = s.heaters[r._heater(name)]
            h.advance_to(s.now)
            return h.t_c
        if kind == "coverage":
            return s.x[r.chemistry.states.index(name)]
        if kind == "valve":
            ln = s.lines[r._line(name)]
            return max(ln.valve.position(s.now), ln.leak)
        sub, _, dev = name.partition(":")
        if sub == "T":
            return r._read_heater(dev, self._rng(dev)).pv_c
        if sub == "out":
            return r._read_heater(dev, self._rng(dev)).output_pct
        return r._read_mfc(dev, self._rng(dev)).flow_sccm
