"""Applying one compiled action (not a pulse) to the tool's devices.

Shared by the run (aldctl/engine/runner.py) and the tuning trial on a real tool
(aldctl/engine/trialtool.py), so that a setpoint, a pump isolation edge or a plasma step's RF
and ignition check is driven, and judged, the same way by both. The permissives
(:meth:`aldctl.engine.safety.Safety.permit`: a dose's, RF on only inside the source's pressure
window) are the caller's, before; telling the safety monitor what was commanded
(:meth:`~aldctl.engine.safety.Safety.note_action`: RF on starts the reflected-power watch)
after.
"""

from __future__ import annotations

from aldctl.engine.devices import Tool
from aldctl.recipe.schedule import Action, ActionKind

DEFAULT_MAX_REFLECTED_W = 30.0


class ActionFailed(Exception):
    """The action could not be carried out, or its check failed (the message says which)."""


def plasma_fault(
    tool: Tool, want_w: float, forward_w: float, reflected_w: float, fault: str
) -> str | None:
    """Why a lit plasma's read-back fails the ignition check, or None: forward power under
    80 % of the setpoint, reflected power over the source's limit, or a generator fault."""
    ps = tool.config.plasma
    max_refl = ps.max_reflected if ps is not None else DEFAULT_MAX_REFLECTED_W
    if forward_w < 0.8 * want_w or reflected_w > max_refl or fault:
        return fault or f"forward {forward_w:.0f} W of {want_w:g} W, reflected {reflected_w:.0f} W"
    return None


async def apply_action(
    tool: Tool, a: Action, ramp_rates: dict[str, float | None] | None = None
) -> None:
    """Drive ``a`` on the devices. ``ramp_rates`` (heater -> rate last sent) skips resending
    an unchanged ramp rate. Raises :class:`ActionFailed`; device errors propagate."""
    k = a.kind
    if k is ActionKind.SET_TEMPERATURE:
        tc = tool.temperatures[a.target]
        if ramp_rates is None or ramp_rates.get(a.target, None) != a.rate:
            await tc.set_ramp_rate(a.rate)
            if ramp_rates is not None:
                ramp_rates[a.target] = a.rate
        await tc.set_temperature(a.value)
    elif k is ActionKind.SET_FLOW:
        if a.target == "carrier" and (a.value or 0.0) > 0:
            await tool.set_carrier_shutoff(True)
        await tool.flows[a.target].set_flow(a.value or 0.0)
    elif k is ActionKind.PUMP_ISOLATION:
        if tool.pump_isolation is None:
            raise ActionFailed("the schedule needs a pump isolation valve; the tool has none")
        await tool.set_pump_isolation(bool(a.value))
    elif k is ActionKind.SET_OZONE:
        if tool.ozone is None:
            raise ActionFailed("the schedule needs an ozone generator; the tool has none")
        await tool.ozone.set_ozone(a.value is not None, a.value or 0.0)
    elif k is ActionKind.RF_ON:
        if tool.plasma is None:
            raise ActionFailed("the schedule needs a plasma source; the tool has none")
        await tool.plasma.set_power(a.value or 0.0)
        await tool.plasma.rf_on()
    elif k is ActionKind.RF_OFF:
        if tool.plasma is not None:
            await tool.plasma.rf_off()
    elif k is ActionKind.CHECK_PLASMA:
        if tool.plasma is None:
            return
        r = await tool.plasma.read_plasma()
        why = plasma_fault(tool, a.value or 0.0, r.forward_w, r.reflected_w, r.fault)
        if why is not None:
            raise ActionFailed(f"plasma did not ignite ({why})")
