"""Grace Workbench: a governed, self-reflective assistant's engines over one DuckDB workspace."""

from __future__ import annotations

__version__ = "0.1.0"

from .causal import current_event, handling
from .clock import Clock, ManualClock, SystemClock
from .errors import (
    ChainBrokenError,
    DegradedModeError,
    EventError,
    GraceError,
    LedgerError,
    LoopError,
    MetricsError,
    PayloadError,
    ProofError,
    ReadOnlyError,
    SignatureError,
    WitnessError,
    WorkspaceError,
    WorkspaceLockedError,
)
from .events import Event
from .ledger import InclusionProof, VerifyReport
from .loops import Loop, Scheduler
from .mesh import Message, Subscription
from .metrics import DerivedMetric
from .workspace import Workspace, open_workspace, projection_differences, replay, verify_inclusion_proof

__all__ = [
    "ChainBrokenError",
    "Clock",
    "DegradedModeError",
    "DerivedMetric",
    "Event",
    "EventError",
    "GraceError",
    "InclusionProof",
    "LedgerError",
    "Loop",
    "LoopError",
    "ManualClock",
    "Message",
    "MetricsError",
    "PayloadError",
    "ProofError",
    "ReadOnlyError",
    "Scheduler",
    "SignatureError",
    "Subscription",
    "SystemClock",
    "VerifyReport",
    "WitnessError",
    "Workspace",
    "WorkspaceError",
    "WorkspaceLockedError",
    "__version__",
    "current_event",
    "handling",
    "open_workspace",
    "projection_differences",
    "replay",
    "verify_inclusion_proof",
]
