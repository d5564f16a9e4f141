"""Physical constants and unit conversions shared by the simulator.

Conventions inside ``sim``: time in integer nanoseconds (``_ns``) at the API and float
seconds inside the physics; gas amounts in mol; pressures in Torr; volumes in litres;
temperatures in degC at the API and kelvin inside the physics.

* Ideal gas in laboratory units: ``p V = n R T`` with R = 62.3636 Torr L/(mol K).
* Mean thermal speed ``v = sqrt(8 R T / (pi M))`` (M in kg/mol).
* One sccm is 1 cm3/min of gas at 0 degC and 1 atm: 101325 Pa * 1e-6 m3 / (R * 273.15 K) / 60 s
  = 7.4367e-7 mol/s.
"""

from __future__ import annotations

import math

R_J = 8.314462618
"""Gas constant, J/(mol K)."""
R_TORR_L = 62.36359
"""Gas constant, Torr L/(mol K)."""
K_B = 1.380649e-23
"""Boltzmann constant, J/K."""
N_A = 6.02214076e23
"""Avogadro constant, 1/mol."""
TORR_PA = 133.322368
"""Pascal per Torr."""
ZERO_C_K = 273.15
SCCM_MOL_S = 101325.0 * 1e-6 / (R_J * ZERO_C_K) / 60.0
"""mol/s carried by a flow of one sccm."""
NS_PER_S = 1_000_000_000
NS_PER_MS = 1_000_000


def kelvin(t_c: float) -> float:
    """degC -> K."""
    return t_c + ZERO_C_K


def mean_speed_m_s(molar_mass_g_mol: float, t_k: float) -> float:
    """Mean thermal speed of a gas molecule, m/s."""
    return math.sqrt(8.0 * R_J * t_k / (math.pi * molar_mass_g_mol * 1e-3))


def seconds_to_ns(t_s: float) -> int:
    """Seconds -> integer nanoseconds (rounded to the nearest ns)."""
    return round(t_s * NS_PER_S)
