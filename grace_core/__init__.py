"""Grace Workbench: a governed, self-reflective assistant's engines over one DuckDB workspace."""

from __future__ import annotations

__version__ = "0.1.0"

from .causal import current_event, handling
from .clock import Clock, ManualClock, SystemClock
from .errors import (
    ArtifactError,
    AuthError,
    BenchError,
    CassetteError,
    ChainBrokenError,
    ChatError,
    ClockError,
    DegradedModeError,
    EventError,
    ExperimentError,
    FeedbackError,
    GraceError,
    LakeError,
    LanguageModelError,
    LedgerError,
    LessonError,
    LoopError,
    MetricsError,
    ModeError,
    ModelCallError,
    ModelError,
    ModelOutputError,
    PayloadError,
    PermissionDenied,
    PolicyError,
    PromptError,
    ProofError,
    ReadOnlyError,
    RuleError,
    SandboxError,
    ScanError,
    ScenarioError,
    SignatureError,
    SubscriptionError,
    SweepError,
    TaskError,
    ThrottledError,
    TokenError,
    ViewError,
    WeakPasswordError,
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
    "Arm",
    "ArtifactError",
    "AuthError",
    "BenchError",
    "CassetteError",
    "ChainBrokenError",
    "ChatError",
    "Clock",
    "ClockError",
    "DegradedModeError",
    "DerivedMetric",
    "Event",
    "EventError",
    "ExperimentError",
    "ExperimentReport",
    "FeedbackError",
    "GraceError",
    "InclusionProof",
    "LakeError",
    "LanguageModelError",
    "LedgerError",
    "LessonError",
    "Loop",
    "LoopError",
    "ManualClock",
    "Message",
    "MetricsError",
    "ModeError",
    "ModelCallError",
    "ModelError",
    "ModelOutputError",
    "PayloadError",
    "PermissionDenied",
    "PolicyError",
    "PromptError",
    "ProofError",
    "ReadOnlyError",
    "RuleError",
    "SandboxError",
    "ScanError",
    "ScenarioError",
    "Scheduler",
    "SignatureError",
    "Subscription",
    "SubscriptionError",
    "SweepError",
    "SystemClock",
    "TaskError",
    "ThrottledError",
    "TokenError",
    "VerifyReport",
    "ViewError",
    "WeakPasswordError",
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
    "run_experiment",
    "verify_inclusion_proof",
]

_LAZY = {"Arm": "experiments", "ExperimentReport": "experiments", "run_experiment": "experiments"}


def __getattr__(name: str) -> object:
    # Experiments import SciPy (half a second): loaded on first use, not by every `grace` command.
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f"{__name__}.{_LAZY[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
