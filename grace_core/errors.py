"""Every error grace_core raises, in one hierarchy (catch ``GraceError`` for all of them)."""

from __future__ import annotations

__all__ = [
    "ArtifactError",
    "AuthError",
    "BenchError",
    "CassetteError",
    "ChainBrokenError",
    "ChatError",
    "ClockError",
    "DegradedModeError",
    "EventError",
    "ExperimentError",
    "FeedbackError",
    "GraceError",
    "LakeError",
    "LanguageModelError",
    "LedgerError",
    "LessonError",
    "LoopError",
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
    "SignatureError",
    "SubscriptionError",
    "SweepError",
    "TaskError",
    "ThrottledError",
    "TokenError",
    "ViewError",
    "WeakPasswordError",
    "WitnessError",
    "WorkspaceError",
    "WorkspaceLockedError",
]


class GraceError(Exception):
    """Base of every error grace_core raises."""


class WorkspaceError(GraceError):
    """A workspace cannot be opened, migrated or used as asked."""


class WorkspaceLockedError(WorkspaceError):
    """Another process owns the workspace file (DuckDB allows one writer per file)."""

    def __init__(self, path: str, *, owner_pid: int | None, owner: str | None) -> None:
        self.path = path
        self.owner_pid = owner_pid
        self.owner = owner
        who = f"process {owner_pid}" if owner_pid else "another process"
        if owner:
            who += f" ({owner})"
        super().__init__(
            f"workspace {path} is owned by {who}; open a read-only snapshot instead with "
            f"open_workspace({path!r}, snapshot=True) or `grace --snapshot ...`"
        )


class ReadOnlyError(WorkspaceError):
    """A write was attempted on a read-only snapshot."""


class EventError(GraceError):
    """An event cannot be published: bad topic, actor, resource or payload. Nothing was written."""


class PayloadError(EventError):
    """The payload is not a JSON object of allowed size and types."""


class LedgerError(GraceError):
    """The ledger cannot complete an operation."""


class ChainBrokenError(LedgerError):
    """Verification found the first event whose stored form does not match the chain."""


class WitnessError(LedgerError):
    """A witness (a copy of the signed checkpoints kept outside the workspace) refused a checkpoint or cannot be
    read or written: the ledger forked from it, is shorter than it, or is signed by a key it did not pin."""


class ProofError(GraceError):
    """A Merkle proof does not verify or is malformed."""


class SignatureError(GraceError):
    """A signed checkpoint is malformed or its signature does not verify."""


class ClockError(GraceError):
    """A clock was asked for something it cannot do (a ManualClock going backwards, a time without a zone)."""


class SubscriptionError(GraceError):
    """A mesh subscription cannot be made as asked (a durable one without a name, a name in use)."""


class LoopError(GraceError):
    """A loop or the scheduler was asked for something it cannot do."""


class MetricsError(GraceError):
    """A metric is unknown, or a sample is malformed."""


class AuthError(GraceError):
    """Authentication failed or an account operation is not possible (messages never say which part was wrong)."""


class WeakPasswordError(AuthError):
    """A new password is too short, too long or too common."""


class TokenError(AuthError):
    """A token is expired, forged, revoked, of the wrong type or for another audience."""


class ThrottledError(AuthError):
    """Too many failed logins for this account or source; try again after ``retry_after`` seconds."""

    def __init__(self, message: str, *, retry_after: float) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class PolicyError(GraceError):
    """A governance policy or request is malformed."""


class PermissionDenied(GraceError):  # noqa: N818 - reads as what happened, like Python's PermissionError
    """Governance denied an action (or its approval was rejected or timed out)."""

    def __init__(self, message: str, *, decision: object = None) -> None:
        super().__init__(message)
        self.decision = decision


class RuleError(GraceError):
    """A Hunter rule is malformed or its examples do not behave as declared."""


class ScanError(GraceError):
    """Hunter was asked to scan or evaluate something it cannot (an unknown target, not text, a bad frame)."""


class FeedbackError(GraceError):
    """Feedback on a Hunter alert names no alert, or a verdict that is not one of the known ones."""


class TaskError(GraceError):
    """A task cannot be created or moved to the requested state."""


class ArtifactError(GraceError):
    """A memory artifact does not exist, or a path or write is not acceptable."""


class ChatError(GraceError):
    """A conversation does not exist or belongs to someone else, or a message is not acceptable."""


class DegradedModeError(GraceError):
    """The workspace is in a degraded mode that forbids this operation (e.g. ``chat_paused``)."""

    def __init__(self, message: str, *, mode: str) -> None:
        super().__init__(message)
        self.mode = mode


class ModeError(GraceError):
    """A degraded mode is unknown, or a switch of one is not acceptable (e.g. entering one without a reason)."""


class ModelError(GraceError):
    """A model, version, alias or run does not exist, or a training request is not acceptable."""


class SandboxError(GraceError):
    """A sandbox run or a remedy cannot be done as asked (bad code, language, limits or proposal)."""


class LakeError(GraceError):
    """A DuckLake cannot be attached, synced or read as asked (no lake attached, a wrong catalog, a conflict)."""


class SweepError(GraceError):
    """A sweep configuration is not acceptable, or one of its runs failed."""


class LanguageModelError(GraceError):
    """A language model is not configured as asked (backend, server URL, model file)."""


class PromptError(LanguageModelError):
    """A prompt is unknown, its file is malformed, or the inputs or parameters do not fit it. Nothing was called."""


class ModelCallError(LanguageModelError):
    """A model call failed (unreachable server, timeout, HTTP error, missing backend); recorded as ``llm.failed``."""

    def __init__(self, message: str, *, kind: str, attempts: int = 1, waited_s: float = 0.0) -> None:
        super().__init__(message)
        self.kind = kind
        self.attempts = attempts
        self.waited_s = waited_s


class ModelOutputError(LanguageModelError):
    """A model answered, but not in the form its prompt asks for; recorded as ``llm.output_rejected``."""

    def __init__(self, message: str, *, completion: object = None) -> None:
        super().__init__(message)
        self.completion = completion


class CassetteError(LanguageModelError):
    """A cassette file is malformed, or a replay asked for a completion the cassette does not hold."""


class ViewError(GraceError):
    """A view is unknown, or was asked to act without what it needs (nothing selected, no reason given)."""


class BenchError(GraceError):
    """A benchmark is unknown or registered twice, or a measurement is not acceptable."""


class LessonError(GraceError):
    """A lesson or its executable effect is malformed, or a lesson does not exist."""


class ScenarioError(GraceError):
    """A scenario is unknown, or cannot run as asked (bad parameters, a workspace without a ManualClock)."""


class ExperimentError(GraceError):
    """An experiment cannot run as asked (a malformed or unknown arm, a baseline that is no arm, no seeds)."""
