"""Grace Workbench: a governed, self-reflective assistant's engines over one DuckDB workspace."""

from __future__ import annotations

__version__ = "0.1.0"

from . import errors
from .causal import current_event, handling
from .clock import Clock, ManualClock, SystemClock
from .errors import *  # noqa: F403 - every error is public API, listed once in errors.__all__
from .events import Event
from .ledger import InclusionProof, VerifyReport
from .loops import Loop, Scheduler
from .mesh import Message, Subscription
from .metrics import DerivedMetric
from .workspace import Workspace, open_workspace, projection_differences, replay, verify_inclusion_proof

# Experiments import SciPy (half a second): loaded on first use by __getattr__, not by every `grace` command.
_LAZY = {"Arm": "experiments", "ExperimentReport": "experiments", "run_experiment": "experiments"}

__all__ = [
    "Clock",
    "DerivedMetric",
    "Event",
    "InclusionProof",
    "Loop",
    "ManualClock",
    "Message",
    "Scheduler",
    "Subscription",
    "SystemClock",
    "VerifyReport",
    "Workspace",
    "__version__",
    "current_event",
    "handling",
    "open_workspace",
    "projection_differences",
    "replay",
    "verify_inclusion_proof",
    *_LAZY,
    *errors.__all__,
]


def __getattr__(name: str) -> object:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f"{__name__}.{_LAZY[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
