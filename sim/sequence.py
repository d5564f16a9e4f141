"""Drive a :class:`~sim.reactor.Reactor` through doses and cycles without the engine.

For the simulator's own tests, its calibration and benchmarks: a dose of a line chemical
opens its valve; a dose of a plasma chemical ("O2-plasma") sets the feed-gas MFC, lets it
stabilise, runs the RF for the dose time and switches both off; an O3 dose needs the ozone
generator on (:func:`prepare` does that). Every function advances virtual time itself.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from sim import chemistry
from sim.reactor import Reactor
from sim.units import NS_PER_S

PLASMA_FEED_SCCM = 20.0
PLASMA_POWER_W = 300.0
PLASMA_STABILISE_NS = 2 * NS_PER_S
OZONE_PCT = 10.0


def prepare(reactor: Reactor, settle_ns: int = 60 * NS_PER_S) -> None:
    """Switch on what the reactor's co-reactants need (ozone) and let it settle."""
    if reactor.has_ozone:
        reactor.set_ozone(True, OZONE_PCT)
    reactor.advance_by(settle_ns)


def dose(reactor: Reactor, chemical: str, duration_ns: int) -> None:
    """Dose ``chemical`` (a line name, or a plasma chemical) for ``duration_ns``."""
    chem = chemistry.catalogue().get(chemical)
    if chem is not None and chem.role is chemistry.Role.PLASMA:
        assert chem.feed_gas is not None
        mfc = f"plasma.{chem.feed_gas}"
        reactor.set_mfc(mfc, PLASMA_FEED_SCCM)
        reactor.advance_by(PLASMA_STABILISE_NS)
        reactor.set_rf(True, PLASMA_POWER_W)
        reactor.advance_by(duration_ns)
        reactor.set_rf(False, 0.0)
        reactor.set_mfc(mfc, 0.0)
        return
    reactor.set_valve(chemical, True)
    reactor.advance_by(duration_ns)
    reactor.set_valve(chemical, False)


def run_cycle(
    reactor: Reactor,
    chemicals: Sequence[str],
    pulse_ns: int | Mapping[str, int],
    purge_ns: int,
) -> None:
    """One cycle: each chemical dosed in turn, each dose followed by a purge."""
    for chem in chemicals:
        t = pulse_ns[chem] if isinstance(pulse_ns, Mapping) else pulse_ns
        dose(reactor, chem, t)
        reactor.advance_by(purge_ns)


def run_supercycle(
    reactor: Reactor,
    subcycles: Mapping[str, Sequence[str]],
    ratio: Mapping[str, int],
    pulse_ns: int | Mapping[str, int],
    purge_ns: int,
) -> None:
    """One supercycle, blocked order: ``ratio[name]`` cycles of each subcycle in turn."""
    for name, count in ratio.items():
        for _ in range(count):
            run_cycle(reactor, subcycles[name], pulse_ns, purge_ns)
