"""The governed code sandbox (``ws.sandbox``): run untrusted code in a separate, isolated process.

``ws.sandbox.run(code, actor=..., language="python", limits=Limits(...))`` does, in order:

1. refuses at once if the workspace is in the ``sandbox_disabled`` degraded mode;
2. records the request (``sandbox.execution_requested``: the code, with any secret Hunter finds masked, and
   its SHA-256 digest) — everything below is caused by this event;
3. Hunter screens the code (target ``code``; alerts fan out as usual);
4. governance decides ``sandbox.execute`` (context: ``network`` false, ``timeout_s``, ``language``,
   ``findings``, ``max_severity``). A denial is recorded (``sandbox.execution_refused``, with the reason) and
   raised as ``PermissionDenied``; ``review`` waits ``wait`` seconds for an admin's approval;
5. runs the code under every isolation layer the machine offers (:mod:`grace_core.sandbox.isolation`) — never
   in this process — and records ``sandbox.execution_completed`` (exit status 0, no limit hit) or
   ``sandbox.execution_failed``, with bounded, secret-masked excerpts of stdout and stderr, the limits, the
   isolation layers used (and those missing, with why), the duration and the peak memory.

Table ``sandbox_executions`` is the projection of these events. The derived histogram
``grace_sandbox_duration_seconds`` (by status) comes from them too.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

import pandas as pd

from grace_core.causal import handling
from grace_core.errors import PermissionDenied, SandboxError
from grace_core.events import Event
from grace_core.hunter import Finding, severity_rank
from grace_core.hunter.scanner import redact
from grace_core.metrics import DerivedMetric
from grace_core.times import TS

from .isolation import Host, Limits, RawResult, detect, run_isolated

if TYPE_CHECKING:
    from grace_core.governance import Governance
    from grace_core.hunter import Hunter
    from grace_core.modes import Modes
    from grace_core.workspace import Workspace

__all__ = ["LANGUAGES", "Execution", "Host", "Limits", "Sandbox", "SandboxError"]

LANGUAGES = ("python", "sh")
MAX_CODE = 256 * 1024  # characters of code a run accepts
STORED_CODE = 64 * 1024  # characters of code kept on the ledger (longer code is stored truncated)
EXCERPT = 4096  # characters of stdout (head) and stderr (tail) kept on the ledger
DURATION_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300)


@dataclass(frozen=True)
class Execution:
    """The outcome of one sandbox run. ``ok`` means exit status 0 and no limit hit."""

    id: str  # the id of the run's sandbox.execution_requested event
    actor: str
    language: str
    code_digest: str
    status: str  # "completed" | "failed"
    exit_code: int | None  # None when a signal ended it
    signal: int | None
    stdout: str
    stderr: str
    duration_s: float
    peak_memory_kb: int
    limit_hit: (
        str | None
    )  # "wall_time" | "cpu" | "memory" | "processes" | "file_size" | "open_files" | "output"
    stdout_truncated: bool
    stderr_truncated: bool
    isolation: tuple[str, ...]
    missing_layers: Mapping[str, str]
    limits: Limits
    event_id: str  # the sandbox.execution_completed / _failed event
    findings: tuple[Finding, ...] = field(default=(), repr=False)

    @property
    def ok(self) -> bool:
        return self.exit_code == 0 and self.limit_hit is None

    def __str__(self) -> str:
        how = f"exit {self.exit_code}" if self.signal is None else f"signal {self.signal}"
        hit = f", stopped by the {self.limit_hit} limit" if self.limit_hit else ""
        return f"<Execution {self.id[:8]} {self.status}: {how}{hit}, {self.duration_s * 1e3:.0f} ms>"


class Sandbox:
    """Governed, isolated code execution (``ws.sandbox``)."""

    def __init__(
        self,
        ws: Workspace,
        *,
        governance: Governance,
        hunter: Hunter,
        modes: Modes,
        use_bwrap: bool = True,
        limits: Limits | None = None,
    ) -> None:
        self._ws = ws
        self._governance = governance
        self._hunter = hunter
        self._modes = modes
        self.use_bwrap = use_bwrap  # False forces the fallback layers (tests and machines without userns)
        self.default_limits = limits or Limits()
        ws.projections.register("sandbox", "sandbox.*", _apply, tables=["sandbox_executions"])
        ws.metrics.define(
            DerivedMetric(
                "grace_sandbox_duration_seconds",
                "histogram",
                "sandbox.execution_*",
                "Wall-clock duration of sandbox runs, by outcome (completed or failed).",
                value="duration_s",
                label="status",
                buckets=DURATION_BUCKETS,
            )
        )

    @property
    def host(self) -> Host:
        """What this machine offers: bubblewrap, setpriv, root, cgroups, seccomp (probed once)."""
        return detect()

    def layers(self) -> dict[str, Any]:
        """The isolation layers a run gets here, and those missing with the reason."""
        probe = run_isolated("", language="python", limits=Limits(timeout_s=10), use_bwrap=self.use_bwrap)
        return {"layers": list(probe.isolation), "missing": dict(probe.missing)}

    # -- running -------------------------------------------------------------------------------------------
    def run(
        self,
        code: str,
        *,
        actor: str,
        language: str = "python",
        limits: Limits | None = None,
        stdin: str | bytes | None = None,
        wait: float | None = None,
        approval_id: str | None = None,
    ) -> Execution:
        """Screen, govern and run ``code`` in isolation; see the module docstring for the steps."""
        ws = self._ws
        self._modes.guard("sandbox_disabled")
        if not isinstance(actor, str) or not actor:
            raise SandboxError("a sandbox run needs the actor who asks for it")
        if language not in LANGUAGES:
            raise SandboxError(f"unknown language {language!r}; the sandbox runs {', '.join(LANGUAGES)}")
        if not isinstance(code, str):
            raise SandboxError("code is text (str)")
        if len(code) > MAX_CODE:
            raise SandboxError(f"code has at most {MAX_CODE} characters, not {len(code)}")
        limits = limits or self.default_limits
        if not isinstance(limits, Limits):
            raise SandboxError("limits must be a sandbox.Limits")
        data = stdin.encode() if isinstance(stdin, str) else stdin
        digest = hashlib.sha256(code.encode()).hexdigest()
        resource = f"sandbox:{digest[:16]}"
        findings = self._hunter.scan(code, target="code")
        stored = _mask(code, findings)
        request = ws.publish(
            "sandbox.execution_requested",
            {
                "language": language,
                "code": stored[:STORED_CODE],
                "code_truncated": len(stored) > STORED_CODE,
                "masked": stored != code,
                "code_digest": digest,
                "code_chars": len(code),
                "limits": limits.as_dict(),
            },
            actor=actor,
            resource=resource,
        )
        with handling(request):
            self._hunter.screen(code, target="code", actor=actor, resource=resource, findings=findings)
            worst = max((f.severity for f in findings), key=severity_rank, default="none")
            context = {
                "network": False,
                "timeout_s": limits.timeout_s,
                "language": language,
                "findings": len(findings),
                "max_severity": worst,
            }
            try:
                self._governance.check(
                    actor,
                    "sandbox.execute",
                    resource=resource,
                    context=context,
                    wait=wait,
                    approval_id=approval_id,
                )
            except PermissionDenied as exc:
                decision = exc.decision
                ws.publish(
                    "sandbox.execution_refused",
                    {
                        "execution": request.id,
                        "reason": str(exc),
                        "effect": getattr(decision, "effect", "deny"),
                        "policy_ids": list(getattr(decision, "policy_ids", ()) or ()),
                        "approval_id": getattr(decision, "approval_id", None),
                    },
                    actor=actor,
                    resource=resource,
                )
                raise
            raw = run_isolated(code, language=language, limits=limits, stdin=data, use_bwrap=self.use_bwrap)
            return self._record(request, raw, actor, language, digest, limits, findings, resource)

    def _record(
        self,
        request: Event,
        raw: RawResult,
        actor: str,
        language: str,
        digest: str,
        limits: Limits,
        findings: list[Finding],
        resource: str,
    ) -> Execution:
        ws = self._ws
        stdout = raw.stdout.decode("utf-8", errors="replace")
        stderr = raw.stderr.decode("utf-8", errors="replace")
        ok = raw.exit_code == 0 and raw.limit_hit is None
        status = "completed" if ok else "failed"
        out_excerpt = stdout[:EXCERPT]
        err_excerpt = stderr[-EXCERPT:]
        payload = {
            "execution": request.id,
            "language": language,
            "code_digest": digest,
            "status": status,
            "exit_code": raw.exit_code,
            "signal": raw.signal,
            "limit_hit": raw.limit_hit,
            "stdout": _mask(out_excerpt, self._hunter.scan(out_excerpt, target="file")),
            "stderr": _mask(err_excerpt, self._hunter.scan(err_excerpt, target="file")),
            "stdout_truncated": raw.stdout_truncated or len(stdout) > EXCERPT,
            "stderr_truncated": raw.stderr_truncated or len(stderr) > EXCERPT,
            "duration_s": round(raw.duration_s, 6),  # a measurement (perf_counter), not a workspace time
            "peak_memory_kb": raw.peak_memory_kb,
            "limits": limits.as_dict(),
            "isolation": list(raw.isolation),
            "missing_layers": dict(sorted(raw.missing.items())),
        }
        event = ws.publish(f"sandbox.execution_{status}", payload, actor=actor, resource=resource)
        return Execution(
            id=request.id,
            actor=actor,
            language=language,
            code_digest=digest,
            status=status,
            exit_code=raw.exit_code,
            signal=raw.signal,
            stdout=stdout,
            stderr=stderr,
            duration_s=raw.duration_s,
            peak_memory_kb=raw.peak_memory_kb,
            limit_hit=raw.limit_hit,
            stdout_truncated=raw.stdout_truncated,
            stderr_truncated=raw.stderr_truncated,
            isolation=raw.isolation,
            missing_layers=dict(raw.missing),
            limits=limits,
            event_id=event.id,
            findings=tuple(findings),
        )

    # -- reading -------------------------------------------------------------------------------------------
    def executions(
        self, *, actor: str | None = None, status: str | None = None, limit: int = 100
    ) -> pd.DataFrame:
        """Recorded runs, newest first."""
        sql = "SELECT * FROM sandbox_executions WHERE true"
        params: list[Any] = []
        if actor is not None:
            sql += " AND actor = ?"
            params.append(actor)
        if status is not None:
            sql += " AND status = ?"
            params.append(status)
        return self._ws.sql(sql + " ORDER BY seq DESC LIMIT ?", [*params, limit])

    def execution(self, execution_id: str) -> dict[str, Any]:
        """One recorded run as a dict (the code as stored: secrets masked)."""
        frame = self._ws.sql("SELECT * FROM sandbox_executions WHERE id = ?", [execution_id])
        if frame.empty:
            raise SandboxError(f"no sandbox execution {execution_id!r}")
        row = {str(k): v for k, v in frame.iloc[0].to_dict().items()}
        row["limits"] = Limits(**json.loads(row["limits"]))
        for key in ("isolation", "missing_layers"):
            if row.get(key) is not None:
                row[key] = json.loads(row[key])
        return row


def limits_from(value: Mapping[str, Any] | Limits | None, base: Limits | None = None) -> Limits:
    """A ``Limits`` from a mapping of overrides (unknown keys are an error)."""
    if isinstance(value, Limits):
        return value
    base = base or Limits()
    try:
        return replace(base, **dict(value or {}))
    except TypeError as exc:
        raise SandboxError(f"unknown limit in {dict(value or {})}: {exc}") from exc


def _mask(text: str, findings: list[Finding]) -> str:
    return redact(text, [f for f in findings if f.category == "secret"], label="redacted")


def _apply(con: Any, events: list[Event]) -> None:
    for e in events:
        p = e.payload
        if e.topic == "sandbox.execution_requested":
            con.execute(
                "INSERT INTO sandbox_executions (id, seq, actor, language, code_digest, code, code_truncated, masked, "
                "limits, status, requested_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, 'requested', "
                f"{TS}) ON CONFLICT DO NOTHING",
                [
                    e.id, e.seq, e.actor, p.get("language"), p.get("code_digest"), p.get("code"),
                    bool(p.get("code_truncated")), bool(p.get("masked")), json.dumps(p.get("limits") or {}), e.ts_us,
                ],
            )  # fmt: skip
        elif e.topic == "sandbox.execution_refused":
            con.execute(
                "UPDATE sandbox_executions SET status = 'refused', reason = ?, result_event = ?, "
                f"finished_at = {TS} WHERE id = ?",
                [p.get("reason"), e.id, e.ts_us, p.get("execution")],
            )
        elif e.topic in ("sandbox.execution_completed", "sandbox.execution_failed"):
            con.execute(
                "UPDATE sandbox_executions SET status = ?, exit_code = ?, signal = ?, limit_hit = ?, stdout = ?, "
                "stderr = ?, stdout_truncated = ?, stderr_truncated = ?, duration_ms = ?, peak_memory_kb = ?, "
                f"isolation = ?, missing_layers = ?, result_event = ?, finished_at = {TS} "
                "WHERE id = ?",
                [
                    p.get("status"), p.get("exit_code"), p.get("signal"), p.get("limit_hit"), p.get("stdout"),
                    p.get("stderr"), bool(p.get("stdout_truncated")), bool(p.get("stderr_truncated")),
                    float(p.get("duration_s") or 0) * 1e3, p.get("peak_memory_kb"), json.dumps(p.get("isolation")),
                    json.dumps(p.get("missing_layers")), e.id, e.ts_us, p.get("execution"),
                ],
            )  # fmt: skip
