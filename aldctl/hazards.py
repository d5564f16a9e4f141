"""Hazard classes of chemicals and the interlocks a tool needs before it may dose them.

Chemicals carry hazard classes (``sim/data/chemicals.yaml``, or a lab's chemistry file). A
tool config declares the interlocks it has (``interlocks:``); validation refuses a dose of a
chemical whose classes need an interlock the tool does not declare, at the dose, naming
the interlock. The rules follow the usual gas-cabinet practice:

* toxic (H2S, NH3, O3, TMP...) and HF/HCl-releasing chemicals: a toxic-gas detector (its
  alarm stops the dose) and an exhaust flow switch (the cabinet and the pump exhaust are
  extracted);
* pyrophoric (TMA, DEZ): an exhaust flow switch (a leak burns in the extracted enclosure,
  not in the room);
* oxidiser (O3, O2 as a dose): an exhaust flow switch (ozone and oxidiser leaks extracted).
"""

from __future__ import annotations

from collections.abc import Iterable

TOXIC_GAS_DETECTOR = "toxic_gas_detector"
EXHAUST_FLOW = "exhaust_flow"
INTERLOCKS = (TOXIC_GAS_DETECTOR, EXHAUST_FLOW)
INTERLOCK_LABELS = {
    TOXIC_GAS_DETECTOR: "toxic-gas detector",
    EXHAUST_FLOW: "exhaust flow switch",
}

CLASSES = (
    "pyrophoric",
    "water-reactive",
    "toxic",
    "corrosive",
    "flammable",
    "oxidizer",
    "asphyxiant",
    "HCl by-product",
    "HF by-product",
)

REQUIRES: dict[str, tuple[str, ...]] = {
    "toxic": (TOXIC_GAS_DETECTOR, EXHAUST_FLOW),
    "HF by-product": (TOXIC_GAS_DETECTOR, EXHAUST_FLOW),
    "HCl by-product": (TOXIC_GAS_DETECTOR, EXHAUST_FLOW),
    "pyrophoric": (EXHAUST_FLOW,),
    "oxidizer": (EXHAUST_FLOW,),
}


def required(hazards: Iterable[str]) -> dict[str, list[str]]:
    """Interlock -> the hazard classes that need it."""
    out: dict[str, list[str]] = {}
    for h in hazards:
        for il in REQUIRES.get(h, ()):
            out.setdefault(il, []).append(h)
    return out
