"""A lab's own chemicals and processes, added to the shipped catalogue and library.

The shipped data (``sim/data/*.yaml``) are package files; a lab adds chemicals, adds
processes or replaces a shipped process with its own calibration without touching them. The
application reads and checks the lab's file (``aldctl.chemfile``: located errors) and hands
the result here as plain data in the shapes of the shipped files:

* chemicals: ``{name: spec}`` as in ``chemicals.yaml`` (``vapour`` may also be given as
  ``{"cc": [A, B]}`` fitted by the caller), plus ``origin`` (where it came from);
* processes: ``(spec, params)`` pairs, ``spec`` as a ``processes.yaml`` entry and ``params``
  as its ``library.yaml`` entry, plus ``origin``;
* phases: ``{name: spec}`` as in ``library.yaml``.

An entry with a shipped name replaces the shipped one. :func:`install` clears every cache
built from the catalogue and the library, so what follows sees the combined data.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

_chemicals: dict[str, dict[str, Any]] = {}
_processes: list[tuple[dict[str, Any], dict[str, Any]]] = []
_phases: dict[str, dict[str, Any]] = {}


def chemicals() -> Mapping[str, Mapping[str, Any]]:
    return _chemicals


def processes() -> Sequence[tuple[Mapping[str, Any], Mapping[str, Any]]]:
    return _processes


def phases() -> Mapping[str, Mapping[str, Any]]:
    return _phases


def install(
    chemicals: Mapping[str, Mapping[str, Any]] | None = None,
    processes: Sequence[tuple[Mapping[str, Any], Mapping[str, Any]]] = (),
    phases: Mapping[str, Mapping[str, Any]] | None = None,
) -> None:
    """Replace the user data (an empty call removes it) and clear the derived caches."""
    _chemicals.clear()
    _chemicals.update({k: dict(v) for k, v in (chemicals or {}).items()})
    _processes.clear()
    _processes.extend((dict(s), dict(p)) for s, p in processes)
    _phases.clear()
    _phases.update({k: dict(v) for k, v in (phases or {}).items()})
    from sim import chemistry, kinetics, library

    for f in (
        chemistry.catalogue,
        library.phases,
        library.processes,
        library.source_temperatures,
        kinetics.kinetics,
    ):
        f.cache_clear()
