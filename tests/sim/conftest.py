"""Fixtures for the simulator tests: reactors built the way the rest of the system builds
them (``ReactorConfig.for_lines``), driven with :mod:`sim.sequence`."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from sim.reactor import Reactor, ReactorConfig

MS = 1_000_000
S = 1_000_000_000


@pytest.fixture
def make_reactor() -> Callable[..., Reactor]:
    """``make_reactor(chemicals, seed=0, **config_changes)`` -> a fresh Reactor."""

    def make(chemicals: list[str], seed: int = 0, **changes: Any) -> Reactor:
        return Reactor(ReactorConfig.for_lines(chemicals, **changes), seed=seed)

    return make


@pytest.fixture
def al2o3(make_reactor: Callable[..., Reactor]) -> Reactor:
    """TMA/H2O reactor, substrate and walls at 200 degC, settled."""
    return make_reactor(["TMA", "H2O"], substrate_c=200.0, walls_c=200.0)
