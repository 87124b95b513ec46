"""Remedies for failed sandbox runs (``ws.remedy``): diagnose from the traceback, propose fixes as diffs.

A durable mesh subscriber (``remedy``) reads every ``sandbox.execution_failed`` event, diagnoses the failure
from the traceback and the limit that stopped the run, and records one ``remedy.proposed`` event per proposal:

* ``missing_import`` — a ``NameError`` for a standard-library module (``import json``) or a well-known name of
  one (``from collections import Counter``);
* ``misspelled_name`` — a ``NameError``, ``AttributeError`` or ``ModuleNotFoundError`` whose name is close to
  one that exists (Python's own "Did you mean" suggestion, else the closest match among the names in the
  code, the builtins or the standard-library modules);
* ``syntax`` — the location of a ``SyntaxError`` and, where the fix is obvious (a missing colon, an unclosed
  bracket, Python 2 ``print``), the fix; a fix is proposed only if the patched code compiles;
* ``lint`` — what ``ruff check --fix`` changes, with a fixed rule selection and no project configuration;
* ``timeout``, ``memory``, ``processes``, ``file_size``, ``output``, ``open_files`` — advice for a run a limit
  stopped (no diff).

A proposal is a unified diff of ``main.py``. ``apply(proposal_id, actor=...)`` runs the patched code through
the governed sandbox (Hunter, governance, isolation, as any run) and records ``remedy.applied`` with whether it
worked (exit status 0, no limit hit). ``success_rate()`` is the share of applied proposals that worked (also the
derived counter ``grace_remedy_applied_total`` by outcome) — the figure the meta-loop reads.

Nothing here executes the code: diagnosis reads the traceback, parses with ``tokenize``/``compile`` (compiling
runs nothing) and runs ruff as a subprocess.
"""

from __future__ import annotations

import builtins
import contextlib
import difflib
import io
import json
import keyword
import re
import shutil
import subprocess
import sys
import tokenize
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from .causal import handling
from .errors import SandboxError
from .events import Event
from .mesh import Message
from .metrics import DerivedMetric
from .times import TS, to_us

if TYPE_CHECKING:
    from .sandbox import Execution, Sandbox
    from .workspace import Workspace

__all__ = ["Application", "Proposal", "Remedy", "diagnose", "ruff_fix"]

ACTOR = "remedy"
SUBSCRIBER = "remedy"
RUFF_RULES = "E,W,F,UP,B,SIM,C4"  # fixed: a project's own configuration never changes what is proposed
_TRACE_LINE = re.compile(r'^\s*File "(?P<file>[^"]+)", line (?P<line>\d+)')
_EXC_LINE = re.compile(
    r"^(?P<type>[A-Za-z_][\w.]*(?:Error|Exception|Warning|Exit|Interrupt))(?::\s*(?P<msg>.*))?$"
)
_DID_YOU_MEAN = re.compile(r"Did you mean:? '?(?P<name>[\w.]+)'?\??")
_KNOWN_NAMES = {
    "Counter": "collections", "defaultdict": "collections", "deque": "collections", "namedtuple": "collections",
    "OrderedDict": "collections", "dataclass": "dataclasses", "field": "dataclasses", "Path": "pathlib",
    "partial": "functools", "reduce": "functools", "lru_cache": "functools", "cache": "functools",
    "chain": "itertools", "product": "itertools", "permutations": "itertools", "combinations": "itertools",
    "sqrt": "math", "pi": "math", "floor": "math", "ceil": "math", "randint": "random", "choice": "random",
    "shuffle": "random", "sleep": "time", "dedent": "textwrap", "pprint": "pprint", "Decimal": "decimal",
    "Fraction": "fractions", "Enum": "enum", "dumps": "json", "loads": "json", "mean": "statistics",
    "median": "statistics", "sha256": "hashlib", "datetime": "datetime", "timedelta": "datetime",
}  # fmt: skip
_ADVICE = {
    "wall_time": (
        "timeout",
        "The run hit the wall-clock limit ({timeout_s:g} s). Look for a loop that never ends or a wait that never "
        "returns; if the work is really that long, raise Limits.timeout_s (runs over 300 s need an admin's "
        "approval for researchers).",
    ),
    "cpu": (
        "timeout",
        "The run used up its CPU time ({cpu_s} s). Look for an unbounded or quadratic loop; use a better "
        "algorithm, a smaller input, or raise Limits.cpu_s.",
    ),
    "memory": (
        "memory",
        "The run hit the memory limit ({memory_mb} MiB). Process the data in chunks or with generators instead "
        "of building it whole, free what you no longer need, or raise Limits.memory_mb.",
    ),
    "processes": (
        "processes",
        "The run hit the process limit ({processes}). Do not start processes in a loop; use a bounded pool, or "
        "raise Limits.processes.",
    ),
    "file_size": (
        "file_size",
        "A file grew past the file-size limit ({file_size_mb} MiB). Write less (or stream and summarise), or "
        "raise Limits.file_size_mb.",
    ),
    "open_files": (
        "open_files",
        "The run opened too many files at once ({open_files}). Close files (use `with open(...)`), or raise "
        "Limits.open_files.",
    ),
    "output": (
        "output",
        "The run printed more than the output cap ({output_kb} KiB per stream) and was stopped. Print a summary, "
        "write bulk results to a file, or raise Limits.output_kb.",
    ),
}


@dataclass(frozen=True)
class Proposal:
    """One diagnosis and, where there is one, its fix (``patched`` code and a unified ``diff``)."""

    kind: str
    summary: str
    line: int | None = None
    patched: str | None = None
    diff: str = ""

    @property
    def is_fix(self) -> bool:
        return self.patched is not None


@dataclass(frozen=True)
class Application:
    """The outcome of applying a proposal: the governed re-run and whether it worked."""

    proposal_id: str
    execution: Execution
    worked: bool
    event_id: str


def unified_diff(code: str, patched: str) -> str:
    a = code.splitlines(keepends=True)
    b = patched.splitlines(keepends=True)
    for lines in (a, b):
        if lines and not lines[-1].endswith("\n"):
            lines[-1] += "\n"
    return "".join(difflib.unified_diff(a, b, "a/main.py", "b/main.py"))


def _fix(kind: str, summary: str, line: int | None, code: str, patched: str) -> Proposal | None:
    if patched == code:
        return None
    return Proposal(kind, summary, line, patched, unified_diff(code, patched))


def _compiles(code: str) -> bool:
    try:
        compile(code, "main.py", "exec", dont_inherit=True)  # compiles only: nothing runs
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return False
    return True


def _parse_traceback(stderr: str) -> tuple[str | None, str, int | None]:
    """(exception type, message, line in main.py) from the last exception in ``stderr``."""
    exc_type, msg, line = None, "", None
    lines = stderr.splitlines()
    for text in reversed(lines):
        m = _EXC_LINE.match(text.strip())
        if m:
            exc_type, msg = m.group("type").rsplit(".", 1)[-1], (m.group("msg") or "").strip()
            break
    for text in lines:
        m = _TRACE_LINE.match(text)
        if m and m.group("file").endswith(("main.py", "<string>")):
            line = int(m.group("line"))  # the last frame in the program itself
    return exc_type, msg, line


def _insert_import(code: str, statement: str) -> str:
    """``code`` with ``statement`` after any shebang, encoding line, docstring and ``__future__`` imports."""
    lines = code.splitlines(keepends=True)
    at = 0
    try:
        import ast

        tree = ast.parse(code)
        for node in tree.body:
            is_doc = (
                isinstance(node, ast.Expr)
                and isinstance(node.value, ast.Constant)
                and isinstance(node.value.value, str)
            )
            if (is_doc and node is tree.body[0]) or (
                isinstance(node, ast.ImportFrom) and node.module == "__future__"
            ):
                at = node.end_lineno or at
            else:
                break
    except (SyntaxError, ValueError, RecursionError):
        pass
    while at < len(lines) and at == 0 and lines[at].startswith("#!"):
        at += 1
    return "".join([*lines[:at], statement + "\n", *lines[at:]])


def _replace_name(code: str, line: int | None, old: str, new: str, *, after_dot: bool = False) -> str:
    """Replace NAME tokens ``old`` by ``new`` on ``line`` (or everywhere when the line is unknown)."""
    try:
        tokens = list(tokenize.generate_tokens(io.StringIO(code).readline))
    except (tokenize.TokenError, SyntaxError, IndentationError):
        return code
    lines = code.splitlines(keepends=True)
    edits: list[tuple[int, int, int]] = []
    prev: tokenize.TokenInfo | None = None
    for tok in tokens:
        if (
            tok.type == tokenize.NAME
            and tok.string == old
            and (line is None or tok.start[0] == line)
            and (not after_dot or (prev is not None and prev.string == "."))
        ):
            edits.append((tok.start[0], tok.start[1], tok.end[1]))
        if tok.type not in (tokenize.NL, tokenize.COMMENT):
            prev = tok
    for row, start, end in reversed(edits):
        text = lines[row - 1]
        lines[row - 1] = text[:start] + new + text[end:]
    return "".join(lines)


def _names_in(code: str) -> set[str]:
    names: set[str] = set()
    with contextlib.suppress(tokenize.TokenError, SyntaxError, IndentationError):
        for tok in tokenize.generate_tokens(io.StringIO(code).readline):
            if tok.type == tokenize.NAME and not keyword.iskeyword(tok.string):
                names.add(tok.string)
    return names


def _diagnose_name(code: str, name: str, msg: str, line: int | None) -> list[Proposal]:
    out: list[Proposal] = []
    if name in sys.stdlib_module_names:
        p = _fix("missing_import", f"`{name}` is a standard-library module that is not imported: add `import {name}`",
                 line, code, _insert_import(code, f"import {name}"))  # fmt: skip
        if p:
            out.append(p)
    elif name in _KNOWN_NAMES:
        module = _KNOWN_NAMES[name]
        stmt = f"from {module} import {name}"
        p = _fix(
            "missing_import", f"`{name}` is not defined: add `{stmt}`", line, code, _insert_import(code, stmt)
        )
        if p:
            out.append(p)
    suggestion = _DID_YOU_MEAN.search(msg)
    candidates = [suggestion.group("name")] if suggestion else []
    if not candidates:
        pool = (_names_in(code) | set(dir(builtins))) - {name}
        candidates = difflib.get_close_matches(name, sorted(pool), n=1, cutoff=0.75)
    for good in candidates[:1]:
        p = _fix("misspelled_name", f"`{name}` is not defined; did you mean `{good}`?", line, code,
                 _replace_name(code, line, name, good))  # fmt: skip
        if p:
            out.append(p)
    return out


def _diagnose_syntax(code: str, exc_type: str, msg: str, line: int | None) -> list[Proposal]:
    where = f"line {line}" if line else "an unknown line"
    located = Proposal("syntax", f"{exc_type} at {where}: {msg}", line)
    if line is None:
        return [located]
    lines = code.splitlines(keepends=True)
    if not 1 <= line <= len(lines):
        return [located]
    text = lines[line - 1]
    body, nl = text.rstrip("\r\n"), text[len(text.rstrip("\r\n")) :] or "\n"
    fixed: str | None = None
    if "expected ':'" in msg:
        fixed = body.rstrip() + ":"
    elif m := re.search(r"'([(\[{])' was never closed", msg):
        fixed = body.rstrip() + {"(": ")", "[": "]", "{": "}"}[m.group(1)]
    elif "Missing parentheses in call to 'print'" in msg:
        m2 = re.match(r"^(\s*)print\s+(.*?)\s*$", body)
        if m2:
            fixed = f"{m2.group(1)}print({m2.group(2)})"
    if fixed is None:
        return [located]
    patched = "".join([*lines[: line - 1], fixed + nl, *lines[line:]])
    if not _compiles(patched):
        return [located]
    p = _fix("syntax", f"{exc_type} at line {line}: {msg} — fixed", line, code, patched)
    return [p] if p else [located]


def find_ruff() -> str | None:
    """The ruff executable: next to this interpreter, on PATH, or the one the ``ruff`` package ships."""
    here = Path(sys.executable).with_name("ruff")
    if here.exists():
        return str(here)
    found = shutil.which("ruff")
    if found:
        return found
    with contextlib.suppress(Exception):
        from ruff.__main__ import find_ruff_bin

        return str(find_ruff_bin())
    return None


def ruff_fix(code: str, *, timeout: float = 20.0) -> str | None:
    """``code`` after ``ruff check --fix`` with a fixed rule set (safe fixes only), or None if ruff is missing."""
    ruff = find_ruff()
    if ruff is None:
        return None
    argv = [
        ruff, "check", "--isolated", "--no-cache", "--fix", "--exit-zero", "--quiet",
        "--select", RUFF_RULES, "--target-version", "py311", "--line-length", "120",
        "--stdin-filename", "main.py", "-",
    ]  # fmt: skip
    try:
        done = subprocess.run(argv, input=code, capture_output=True, text=True, timeout=timeout, check=False)  # noqa: S603
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout if done.returncode == 0 else None


def diagnose(
    code: str | None, stderr: str, *, limit_hit: str | None = None, limits: dict[str, Any] | None = None
) -> list[Proposal]:
    """Proposals for a failed run: advice for a limit, else fixes from the traceback, then ruff's fixes.

    ``code`` None (not stored verbatim: it held secrets, or was too long) gives diagnoses without fixes.
    """
    if limit_hit is not None:
        kind, text = _ADVICE.get(limit_hit, ("limit", "The run was stopped by the {limit} limit."))
        values = {**(limits or {}), "limit": limit_hit}
        try:
            summary = text.format(**values)
        except (KeyError, ValueError):
            summary = text
        return [Proposal(kind, summary)]
    exc_type, msg, line = _parse_traceback(stderr)
    out: list[Proposal] = []
    if code is None:
        if exc_type:
            out.append(
                Proposal(
                    "error",
                    f"{exc_type} at line {line}: {msg} (no fix: the code is not stored verbatim)",
                    line,
                )
            )
        return out
    if exc_type in ("SyntaxError", "IndentationError", "TabError"):
        out += _diagnose_syntax(code, exc_type, msg, line)
    elif exc_type in ("NameError", "UnboundLocalError"):
        m = re.search(r"name '(\w+)' is not defined", msg)
        if m:
            out += _diagnose_name(code, m.group(1), msg, line)
    elif exc_type == "AttributeError":
        m = re.search(r"has no attribute '(\w+)'", msg)
        s = _DID_YOU_MEAN.search(msg)
        if m and s:
            good = s.group("name").rsplit(".", 1)[-1]
            p = _fix("misspelled_name", f"no attribute `{m.group(1)}`; did you mean `{good}`?", line, code,
                     _replace_name(code, line, m.group(1), good, after_dot=True))  # fmt: skip
            if p:
                out.append(p)
    elif exc_type in ("ModuleNotFoundError", "ImportError"):
        m = re.search(r"No module named '([\w.]+)'", msg)
        if m:
            top = m.group(1).split(".")[0]
            close = difflib.get_close_matches(top, sorted(sys.stdlib_module_names), n=1, cutoff=0.8)
            if close and close[0] != top:
                p = _fix("misspelled_name", f"no module `{top}`; did you mean the standard-library `{close[0]}`?",
                         line, code, _replace_name(code, line, top, close[0]))  # fmt: skip
                if p:
                    out.append(p)
            else:
                out.append(Proposal(
                    "missing_module",
                    f"No module named {top!r}: the sandbox has Python's standard library only (no site-packages).",
                    line,
                ))  # fmt: skip
    if exc_type and not any(p.kind != "lint" for p in out):
        out.append(
            Proposal("error", f"{exc_type} at line {line}: {msg}" if line else f"{exc_type}: {msg}", line)
        )
    fixed = ruff_fix(code) if _compiles(code) else None
    if fixed is not None:
        p = _fix("lint", f"ruff check --fix ({RUFF_RULES}) changes the code", None, code, fixed)
        if p:
            out.append(p)
    return out


class Remedy:
    """Diagnoses failed sandbox runs and proposes, stores and applies fixes (``ws.remedy``)."""

    def __init__(self, ws: Workspace, *, sandbox: Sandbox) -> None:
        self._ws = ws
        self._sandbox = sandbox
        ws.projections.register("remedy", "remedy.*", _apply, tables=["remedy_proposals"])
        ws.metrics.define(
            DerivedMetric(
                "grace_remedy_applied_total",
                "counter",
                "remedy.applied",
                "Remedy proposals applied (re-run in the sandbox), by outcome: worked or failed.",
                label="outcome",
            )
        )
        if not ws.read_only:
            ws.subscribe("sandbox.execution_failed", self._on_failed, name=SUBSCRIBER, durable=True)

    # -- the subscriber ------------------------------------------------------------------------------------
    def _on_failed(self, event: Event) -> None:
        p = event.payload
        execution = p.get("execution")
        if not isinstance(execution, str):
            return
        reader = self._ws.ledger.reader()
        if reader.execute(
            "SELECT 1 FROM remedy_proposals WHERE execution = ? LIMIT 1", [execution]
        ).fetchone():
            return  # redelivered after a crash: the proposals exist already
        row = reader.execute(
            "SELECT code, masked, code_truncated FROM sandbox_executions WHERE id = ?", [execution]
        ).fetchone()
        code = None if row is None or row[1] or row[2] else row[0]
        proposals = diagnose(
            code, p.get("stderr") or "", limit_hit=p.get("limit_hit"), limits=p.get("limits")
        )
        if not proposals:
            return
        messages = [
            Message(
                "remedy.proposed",
                {
                    "execution": execution,
                    "kind": pr.kind,
                    "summary": pr.summary,
                    "line": pr.line,
                    "diff": pr.diff,
                    "patched_code": pr.patched,
                    "language": p.get("language", "python"),
                    "limits": p.get("limits"),
                },
                f"remedy:{execution}",
            )
            for pr in proposals
        ]
        self._ws.publish_many(messages, actor=ACTOR)

    # -- reading -------------------------------------------------------------------------------------------
    def proposals(self, *, execution: str | None = None, state: str | None = None) -> pd.DataFrame:
        """Stored proposals, newest first (``state``: proposed, worked, failed, advice)."""
        sql = "SELECT * FROM remedy_proposals WHERE true"
        params: list[Any] = []
        if execution is not None:
            sql += " AND execution = ?"
            params.append(execution)
        if state is not None:
            sql += " AND state = ?"
            params.append(state)
        # Newest failure first; its proposals in diagnosis order (fixes before lint).
        order = " ORDER BY max(seq) OVER (PARTITION BY execution) DESC, seq"
        return self._ws.sql(sql + order, params)

    def proposal(self, proposal_id: str) -> dict[str, Any]:
        frame = self._ws.sql("SELECT * FROM remedy_proposals WHERE id = ?", [proposal_id])
        if frame.empty:
            raise SandboxError(f"no remedy proposal {proposal_id!r}; see ws.remedy.proposals()")
        return {str(k): v for k, v in frame.iloc[0].to_dict().items()}

    def success_rate(self, since: float | None = None, until: float | None = None) -> float | None:
        """Share of applied proposals that worked (None when none was applied); bounds are workspace-clock
        epoch seconds, as the meta-loop's objectives take them."""
        sql = "SELECT count(*), count(*) FILTER (WHERE payload->>'$.outcome' = 'worked') FROM events " \
              "WHERE topic = 'remedy.applied'"  # fmt: skip
        params: list[Any] = []
        if since is not None:
            sql += f" AND ts >= {TS}"
            params.append(to_us(since))
        if until is not None:
            sql += f" AND ts < {TS}"
            params.append(to_us(until))
        total, worked = self._ws.ledger.reader().execute(sql, params).fetchone() or (0, 0)
        return None if not total else worked / total

    # -- applying ------------------------------------------------------------------------------------------
    def apply(self, proposal_id: str, *, actor: str, wait: float | None = None) -> Application:
        """Re-run the proposal's patched code through the governed sandbox; record whether it worked."""
        from .sandbox import Limits

        prop = self.proposal(proposal_id)
        if prop["patched_code"] is None or not isinstance(prop["patched_code"], str):
            raise SandboxError(f"proposal {proposal_id} is advice ({prop['kind']}): there is no fix to apply")
        if prop["state"] != "proposed":
            raise SandboxError(f"proposal {proposal_id} was applied already ({prop['state']})")
        event = self._ws.ledger.get(proposal_id)
        payload = event.payload if event is not None else {}
        limits = Limits(**payload["limits"]) if payload.get("limits") else None
        with handling(event) if event is not None else contextlib.nullcontext():
            execution = self._sandbox.run(
                prop["patched_code"],
                actor=actor,
                language=payload.get("language", "python"),
                limits=limits,
                wait=wait,
            )
            worked = execution.ok
            applied = self._ws.publish(
                "remedy.applied",
                {
                    "proposal": proposal_id,
                    "execution": execution.id,
                    "original_execution": prop["execution"],
                    "kind": prop["kind"],
                    "outcome": "worked" if worked else "failed",
                    "worked": worked,
                },
                actor=actor,
                resource=f"remedy:{prop['execution']}",
            )
        return Application(proposal_id, execution, worked, applied.id)


def _apply(con: Any, events: list[Event]) -> None:
    for e in events:
        p = e.payload
        if e.topic == "remedy.proposed":
            patched = p.get("patched_code")
            con.execute(
                "INSERT INTO remedy_proposals (id, seq, execution, kind, summary, line, diff, patched_code, state, "
                f"proposed_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, {TS}) ON CONFLICT DO NOTHING",
                [
                    e.id, e.seq, p.get("execution"), p.get("kind"), p.get("summary"), p.get("line"),
                    p.get("diff") or "", patched, "proposed" if patched is not None else "advice", e.ts_us,
                ],
            )  # fmt: skip
        elif e.topic == "remedy.applied":
            con.execute(
                "UPDATE remedy_proposals SET state = ?, applied_execution = ?, applied_by = ?, "
                f"applied_at = {TS} WHERE id = ?",
                [p.get("outcome"), p.get("execution"), e.actor, e.ts_us, p.get("proposal")],
            )


def _json(value: Any) -> str:
    return json.dumps(value, sort_keys=True)
