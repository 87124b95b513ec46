"""Seeded scenarios with a hidden ground truth, scored over simulated time (see ``base`` for the framework).

``run_scenario(ws_or_path, "ops", hours=24, seed=1)`` runs one; ``scenarios()`` lists them; a new scenario is
a small ``Scenario`` subclass decorated with ``@register``.
"""

from __future__ import annotations

from .base import (
    LOOPS_OFF,
    LOOPS_ON,
    REGISTRY,
    Scenario,
    ScenarioResult,
    ScenarioRun,
    get_scenario,
    loop_selection,
    register,
    run_scenario,
    scenarios,
)
from .driver import Driver, Traffic
from .engine import Scenarios
from .ops import OpsScenario
from .qa import QaScenario
from .security import SecurityScenario

__all__ = [
    "LOOPS_OFF",
    "LOOPS_ON",
    "REGISTRY",
    "Driver",
    "OpsScenario",
    "QaScenario",
    "Scenario",
    "ScenarioResult",
    "ScenarioRun",
    "Scenarios",
    "SecurityScenario",
    "Traffic",
    "get_scenario",
    "loop_selection",
    "register",
    "run_scenario",
    "scenarios",
]
