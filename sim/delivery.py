"""Precursor delivery through an ALD valve: how much a pulse draws from its source.

Vapour draw (no carrier through the source, simulation.md 3.5): while the valve is open the
source's vapour flows into the chamber through the valve and line conductance ``C``. The
precursor's own partial pressure in the chamber is close to zero, so its flow is
``Q = C p_src`` in Torr L/s (the "choked/molecular" form of simulation.md 3.5), with
``p_src`` the vapour pressure at the source temperature (gases: their regulated supply
pressure). Room-temperature sources (10-25 Torr) deliver a dose in milliseconds; heated
solids (~0.1 Torr) need pulses of seconds.

The valve does not pass gas during its dead time and passes about half during its stroke,
so the effective open time of a commanded pulse ``t`` is ``max(0, t - dead - stroke/2)``
(simulation.md 4, "minimum useful pulse").

The default conductance, 0.24 L/s, makes a 15 ms TMA pulse from 25 degC deliver ~0.04
Torr L, the dose of the worked example in simulation.md 5.1 (0.14 Torr peak in 0.3 L).
"""

from __future__ import annotations

from sim import chemistry

DEFAULT_CONDUCTANCE_L_S = 0.24
DEFAULT_DEAD_S = 0.002
DEFAULT_STROKE_S = 0.006
GAS_SUPPLY_TORR = 20.0
"""Regulated delivery pressure behind the valve for gas co-reactants (H2S, O2, O3/O2...)."""
R_J_MOL_K = 8.314462618
TORR_L_TO_PA_M3 = 133.322 * 1e-3


def effective_open_s(
    commanded_s: float, dead_s: float = DEFAULT_DEAD_S, stroke_s: float = DEFAULT_STROKE_S
) -> float:
    return max(0.0, commanded_s - dead_s - 0.5 * stroke_s)


def source_pressure_torr(chemical: str, source_t_c: float | None) -> float:
    chem = chemistry.get(chemical)
    if chem.vapour is None or source_t_c is None:
        return GAS_SUPPLY_TORR if chem.vapour is None else 0.0
    return chem.vapour.torr(source_t_c)


def pulse_quantity_torr_l(
    chemical: str,
    source_t_c: float | None,
    commanded_s: float,
    partial_torr: float = 0.0,
    conductance_l_s: float = DEFAULT_CONDUCTANCE_L_S,
    dead_s: float = DEFAULT_DEAD_S,
    stroke_s: float = DEFAULT_STROKE_S,
) -> float:
    """Gas drawn by one pulse, Torr L (``partial_torr``: the chemical's chamber pressure)."""
    drive = max(0.0, source_pressure_torr(chemical, source_t_c) - partial_torr)
    return conductance_l_s * drive * effective_open_s(commanded_s, dead_s, stroke_s)


def torr_l_to_grams(quantity_torr_l: float, chemical: str, gas_t_c: float = 25.0) -> float:
    """Mass of ``quantity_torr_l`` of ``chemical`` vapour at ``gas_t_c`` (ideal gas)."""
    moles = quantity_torr_l * TORR_L_TO_PA_M3 / (R_J_MOL_K * (gas_t_c + 273.15))
    return moles * chemistry.get(chemical).molar_mass


def pulse_grams(
    chemical: str,
    source_t_c: float | None,
    commanded_s: float,
    partial_torr: float = 0.0,
    conductance_l_s: float = DEFAULT_CONDUCTANCE_L_S,
) -> float:
    """Mass one pulse draws from the source, g."""
    n = pulse_quantity_torr_l(chemical, source_t_c, commanded_s, partial_torr, conductance_l_s)
    t = source_t_c if source_t_c is not None else 25.0
    return torr_l_to_grams(n, chemical, t)
