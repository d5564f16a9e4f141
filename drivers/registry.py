"""Driver registry: factories found by name in the ``aldctl.drivers`` entry-point group.

A lab adds its own driver as a separate package that declares, in its ``pyproject.toml``::

    [project.entry-points."aldctl.drivers"]
    my-heater = "my_package.heater:create"

where ``create(name, options, ctx)`` follows :class:`drivers.base.DriverFactory`.
"""

from __future__ import annotations

import difflib
from functools import cache
from importlib.metadata import EntryPoint, entry_points

from drivers.base import DriverFactory

GROUP = "aldctl.drivers"


class UnknownDriver(LookupError):
    def __init__(self, name: str, known: list[str]) -> None:
        close = difflib.get_close_matches(name, known, n=1)
        hint = f"did you mean '{close[0]}'?" if close else "installed: " + ", ".join(known)
        super().__init__(f"no driver '{name}' is installed ({hint})")
        self.name = name
        self.hint = hint


@cache
def available() -> dict[str, EntryPoint]:
    """Installed drivers by name."""
    return {ep.name: ep for ep in entry_points(group=GROUP)}


def factory(name: str) -> DriverFactory:
    eps = available()
    if name not in eps:
        raise UnknownDriver(name, sorted(eps))
    loaded: DriverFactory = eps[name].load()
    return loaded
