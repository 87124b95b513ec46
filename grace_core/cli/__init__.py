"""The ``grace`` command: a thin shell over the library for the things a terminal is good at.

Every command takes ``--workspace PATH`` (on the group or on the command; default ``$GRACE_WORKSPACE``, else
``grace.duckdb`` in the project or current directory) and ``--snapshot`` (open a consistent read-only copy, which
works while another process owns the file). Errors are one line on stderr starting with ``grace: error:`` and
exit with status 2; a check that finds a problem (a broken ledger, a replay that differs) exits with status 1.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import re
import signal
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any, Literal, NoReturn, TypeVar

import click
import duckdb

from grace_core import __version__, settings
from grace_core.demo import demo_logins, seed_demo
from grace_core.errors import BenchError, GraceError, LedgerError, WorkspaceError
from grace_core.events import Event
from grace_core.governance import OPERATOR
from grace_core.workspace import MEMORY, Workspace, open_workspace

__all__ = [
    "OPERATOR",
    "by_option",
    "cli",
    "hours_option",
    "json_pairs",
    "main",
    "progress_option",
    "score_every_option",
    "workspace_options",
]

F = TypeVar("F", bound=Callable[..., Any])
_PATH_KEY = "grace.workspace"
_SNAPSHOT_KEY = "grace.snapshot"
FOLLOW_INTERVAL = 0.5  # seconds between polls of `events tail --follow`


# -- options shared by the group and every command -----------------------------------------------------------
def _remember_path(ctx: click.Context, _param: click.Parameter, value: str | None) -> None:
    # ctx.meta is shared by the group's and the command's contexts: the command's value wins when given.
    if value is not None:
        ctx.meta[_PATH_KEY] = value


def _remember_snapshot(ctx: click.Context, _param: click.Parameter, value: bool) -> None:
    if value:
        ctx.meta[_SNAPSHOT_KEY] = True


def workspace_options(f: F) -> F:
    f = click.option(
        "--snapshot",
        is_flag=True,
        expose_value=False,
        callback=_remember_snapshot,
        help="Open a read-only snapshot (works while another process owns the workspace).",
    )(f)
    f = click.option(
        "--workspace",
        "-w",
        metavar="PATH",
        expose_value=False,
        callback=_remember_path,
        help="Workspace file (default: $GRACE_WORKSPACE, else grace.duckdb in the project or current directory).",
    )(f)
    return f


def by_option(
    text: str = "Who does it (must be allowed to).", *, flag: str = "--by", dest: str = "by"
) -> Callable[[F], F]:
    """The option naming who a command acts as: the local operator (``OPERATOR``, the service actor
    ``system``) unless given; governance decides whether that actor may."""
    return click.option(flag, dest, default=OPERATOR, show_default=True, help=text)


# -- options of the commands that simulate time (scenario run, experiment, simulate) and of long runs -------------
def hours_option(*, default: float, text: str = "Simulated time.") -> Callable[[F], F]:
    """``--hours``: how much simulated time a run covers (a positive number)."""
    return click.option(
        "--hours", type=click.FloatRange(min=0, min_open=True), default=default, show_default=True, help=text
    )


def score_every_option(f: F) -> F:
    """``--score-every``: simulated seconds per point of a scenario's learning curve."""
    return click.option(
        "--score-every",
        type=click.FloatRange(min=0, min_open=True),
        default=3600.0,
        show_default=True,
        help="Simulated seconds per point of the learning curve.",
    )(f)


def progress_option(f: F) -> F:
    """``--progress/--no-progress``: a progress bar on stderr (on by default)."""
    return click.option(
        "--progress/--no-progress", default=True, show_default=True, help="A progress bar on stderr."
    )(f)


def json_pairs(values: Iterable[str], option: str, *, form: str = "NAME=VALUE") -> dict[str, Any]:
    """The values of a repeatable ``NAME=VALUE`` option as a dict, each VALUE parsed as JSON when it can be,
    else kept as text; a value without ``=`` or a name is a usage error ("``option`` takes ``form``")."""
    out: dict[str, Any] = {}
    for item in values:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise click.UsageError(f"{option} takes {form}, not {item!r}")
        try:
            out[key] = json.loads(raw)
        except ValueError:
            out[key] = raw
    return out


def _path(ctx: click.Context) -> str:
    return settings.workspace_path(ctx.meta.get(_PATH_KEY))


def _snapshot(ctx: click.Context) -> bool:
    return bool(ctx.meta.get(_SNAPSHOT_KEY))


def _exists(path: str) -> bool:
    return path == MEMORY or Path(path).expanduser().exists()


@contextlib.contextmanager
def _workspace(ctx: click.Context, *, writes: bool = False, create: bool = False) -> Iterator[Workspace]:
    """Open the workspace the options name; read commands refuse to create one by accident."""
    path, snapshot = _path(ctx), _snapshot(ctx)
    if writes and snapshot:
        raise click.UsageError(f"`{ctx.command_path}` writes to the workspace; drop --snapshot")
    if not create and not snapshot and not _exists(path):
        where = Path(path).expanduser().resolve()
        raise WorkspaceError(f"no workspace at {where}; create one with `grace init`")
    ws = open_workspace(path, snapshot=snapshot)
    try:
        yield ws
    finally:
        ws.close()


# -- output helpers ------------------------------------------------------------------------------------------
def _jsonable(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if value is None or isinstance(value, str | int | float | bool):
        return value
    if hasattr(value, "isoformat"):
        return None if str(value) == "NaT" else value.isoformat()
    if hasattr(value, "item"):  # numpy scalars
        return _jsonable(value.item())
    if isinstance(value, bytes):
        return value.hex()
    return str(value)


def _echo_json(value: Any) -> None:
    click.echo(json.dumps(_jsonable(value), ensure_ascii=False))


def _cell(value: Any) -> str:
    value = _jsonable(value)
    if value is None:
        return ""
    if isinstance(value, dict):
        return ",".join(f"{k}={v}" for k, v in value.items())
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)


def _table(rows: Sequence[Mapping[str, Any]], columns: Sequence[str]) -> list[str]:
    """Aligned text columns: numbers right-aligned, everything else left-aligned."""
    cells = [[_cell(r.get(c)) for c in columns] for r in rows]
    numeric = [
        all(_jsonable(r.get(c)) is None or isinstance(_jsonable(r.get(c)), int | float) for r in rows)
        for c in columns
    ]
    widths = [max([len(c)] + [len(row[i]) for row in cells]) for i, c in enumerate(columns)]

    def line(values: Sequence[str]) -> str:
        parts = [v.rjust(w) if num else v.ljust(w) for v, w, num in zip(values, widths, numeric, strict=True)]
        return "  ".join(parts).rstrip()

    return [line(columns), *(line(row) for row in cells)]


def _show(
    rows: Sequence[Mapping[str, Any]],
    columns: Sequence[str],
    as_json: bool,
    *,
    json_fields: Sequence[str] | Literal["all"] | None = None,
    empty: str | None = None,
    tidy: Callable[[dict[str, Any]], None] | None = None,
) -> None:
    """The one way a command prints rows: an aligned table of ``columns``, or (``--json``) one JSON object a line.

    A JSON object holds ``json_fields`` of its row (``"all"``: every field; default: ``columns``). ``empty`` is
    printed instead of a table with no rows. ``tidy`` shortens a copy of each row for the table only (JSON
    output is never shortened).
    """
    if as_json:
        for row in rows:
            fields = columns if json_fields is None else list(row) if json_fields == "all" else json_fields
            _echo_json({c: row.get(c) for c in fields})
        return
    if not rows and empty is not None:
        click.echo(empty)
        return
    if tidy is not None:
        copies = [dict(r) for r in rows]
        for row in copies:
            tidy(row)
        rows = copies
    for line in _table(rows, columns):
        click.echo(line)


# Control characters a terminal acts on (escape sequences, carriage returns, bidirectional overrides), except
# newline and tab: printed as visible escapes, so a program's output cannot restyle or rewrite the terminal.
_CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u200e\u200f\u202a-\u202e\u2066-\u2069]")


def _escape_controls(text: str) -> str:
    """``text`` with its terminal control characters shown as ``\\x1b``-style escapes."""
    return _CONTROL.sub(lambda m: m.group().encode("unicode_escape").decode("ascii"), text)


def _records(frame: Any) -> list[dict[str, Any]]:
    return [dict(r) for r in frame.to_dict(orient="records")]


# -- the group -----------------------------------------------------------------------------------------------
@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "--version", prog_name="grace", message="%(prog)s %(version)s")
@workspace_options
def cli() -> None:
    """Grace Workbench: one verifiable DuckDB workspace for a governed, self-reflective assistant."""


@cli.command()
@click.option("--demo", is_flag=True, help="Add a small demo (chat, memory, metrics, a signed checkpoint).")
@workspace_options
@click.pass_context
def init(ctx: click.Context, demo: bool) -> None:
    """Create (or migrate) the workspace and print what it holds."""
    with _workspace(ctx, writes=True, create=True) as ws:
        added = seed_demo(ws) if demo else 0
        click.echo(f"workspace  {ws.path}")
        click.echo(f"origin     {ws.origin}")
        click.echo(f"events     {ws.ledger.head[0]}")
        if demo:
            click.echo(f"demo       {f'added {added} events' if added else 'already present'}")
            for login in demo_logins(ws):
                click.echo(f"demo user  {login.name} ({login.role}): password {login.password}")
        if ws.auth.users().empty:
            click.echo("no users yet: create the first admin with `grace user add NAME --role admin`")


# -- ledger --------------------------------------------------------------------------------------------------
@cli.group()
@workspace_options
def ledger() -> None:
    """Verify the hash chain, sign checkpoints (kept by the witnesses too), prove inclusion."""


@ledger.command()
@click.option("--progress", is_flag=True, help="Show a progress bar on stderr.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as one JSON object.")
@workspace_options
@click.pass_context
def verify(ctx: click.Context, progress: bool, as_json: bool) -> None:
    """Recompute every hash and hold the chain against its checkpoints and witnesses; exit 1 and name the first
    bad seq if the ledger was altered, rewritten or shortened."""
    with _workspace(ctx) as ws:
        report = ws.verify(progress=progress)
    if as_json:
        _echo_json(dataclasses.asdict(report))
    else:
        click.echo(str(report))
    if not report.ok:
        ctx.exit(1)


@ledger.command()
@by_option("Who signs it (must be allowed ledger.checkpoint).")
@workspace_options
@click.pass_context
def checkpoint(ctx: click.Context, by: str) -> None:
    """Sign a checkpoint of the ledger as it stands and print the signed note."""
    with _workspace(ctx, writes=True) as ws:
        note = ws.checkpoint(actor=by)
    click.echo(note, nl=not note.endswith("\n"))


@ledger.command("pin-key")
@workspace_options
@click.pass_context
def pin_key(ctx: click.Context) -> None:
    """Pin the workspace's current signing key in its witnesses (only after replacing the key on purpose)."""
    with _workspace(ctx, writes=True) as ws:
        paths = [str(w.path) for w in ws.witnesses]
        if not paths:
            raise LedgerError("an in-memory workspace has no witness")
        pinned = ws.pin_signing_key()
    for path in paths:
        click.echo(f"{'pinned in' if path in pinned else 'already pinned in'} {path}")


@ledger.command()
@click.argument("seq", type=int)
@click.option("--json", "as_json", is_flag=True, help="Print only the proof, as one JSON object.")
@workspace_options
@click.pass_context
def prove(ctx: click.Context, seq: int, as_json: bool) -> None:
    """Print an inclusion proof of event SEQ in a signed checkpoint (checked before it is printed)."""
    if seq < 1:
        raise click.BadParameter(f"events are numbered from 1, not {seq}", param_hint="'SEQ'")
    with _workspace(ctx) as ws:
        event = ws.ledger.at(seq)  # a clear error for a seq the ledger does not hold
        try:
            ws.latest_checkpoint(covering=seq)
        except LedgerError:
            if ws.read_only:
                raise LedgerError(
                    f"no signed checkpoint covers seq {seq}, and a snapshot cannot sign one; "
                    "run `grace ledger checkpoint` where the workspace is owned"
                ) from None
            click.echo(f"no signed checkpoint covers seq {seq}; signing one now", err=True)
            ws.checkpoint(actor=OPERATOR)
        proof = ws.prove(seq)
        cp = ws.check_proof(proof)
    if as_json:
        _echo_json(proof.as_dict())
        return
    click.echo(
        f"event {seq} ({event.topic}) is in the signed checkpoint of size {proof.size} "
        f"(root {cp.root.hex()}); the proof verifies"
    )
    click.echo(json.dumps(proof.as_dict(), indent=2))


# -- events --------------------------------------------------------------------------------------------------
@cli.group()
@workspace_options
def events() -> None:
    """Look at the ledger's events."""


def _last_events(ws: Workspace, topic: str | None, n: int) -> list[Event]:
    newest = ws.events(topic=topic, limit=n)
    if newest.empty:
        return []
    return ws.ledger.events(since=int(newest["seq"].min()) - 1, until=int(newest["seq"].max()), topic=topic)


def _short(text: str, width: int = 60) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


class _EventPrinter:
    """Event lines with columns as wide as the first batch needed (later lines keep those widths)."""

    def __init__(self, as_json: bool) -> None:
        self.as_json = as_json
        self.widths = [1, 23, 5, 5]

    def print(self, batch: Iterable[Event]) -> None:
        batch = list(batch)
        if self.as_json:
            for e in batch:
                _echo_json(e.as_dict())
            return
        rows = [(str(e.seq), _time(e.ts), e.topic, e.actor, _short(e.payload_json)) for e in batch]
        for i in range(4):
            self.widths[i] = max([self.widths[i]] + [len(r[i]) for r in rows])
        w = self.widths
        for r in rows:
            click.echo(
                f"{r[0].rjust(w[0])}  {r[1].ljust(w[1])}  {r[2].ljust(w[2])}  {r[3].ljust(w[3])}  {r[4]}"
            )


def _time(ts: datetime) -> str:
    return ts.strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]


@events.command()
@click.option("--topic", "-t", metavar="PATTERN", help="Only topics matching this glob (e.g. 'demo.chat.*').")
@click.option(
    "-n",
    "--lines",
    "n",
    type=click.IntRange(min=0),
    default=20,
    show_default=True,
    help="How many of the newest events to print.",
)
@click.option("--follow", "-f", is_flag=True, help="Keep printing new events until Ctrl-C.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line.")
@workspace_options
@click.pass_context
def tail(ctx: click.Context, topic: str | None, n: int, follow: bool, as_json: bool) -> None:
    """Print the newest events: seq, time (UTC), topic, actor, payload.

    With --follow, the workspace is never held between polls: every 0.5 s a read-only snapshot is re-opened
    (DuckDB lets one process write a file, so holding it would lock out the process that writes the events),
    and any new events are printed. When another process owns the workspace, each poll asks it for a fresh
    snapshot, so this works beside a notebook kernel or a server.
    """
    printer = _EventPrinter(as_json)
    with _workspace(ctx) as ws:
        batch = _last_events(ws, topic, n)
        last = ws.ledger.head[0]
    printer.print(batch)
    if not follow:
        return
    path = _path(ctx)
    # Stopped by Ctrl-C, or by SIGTERM: a background job ignores SIGINT, so `kill` is how it is stopped.
    previous = signal.signal(signal.SIGTERM, _interrupt)
    try:
        while True:
            time.sleep(FOLLOW_INTERVAL)
            with open_workspace(path, snapshot=True) as ws:
                batch = ws.ledger.events(since=last, topic=topic)
                last = max(last, ws.ledger.head[0])
            printer.print(batch)
    except KeyboardInterrupt:
        return
    finally:
        signal.signal(signal.SIGTERM, previous)


def _interrupt(_signum: int, _frame: object) -> None:
    raise KeyboardInterrupt


# -- replay, metrics, loops, bench ---------------------------------------------------------------------------
@cli.command()
@click.option("--into", "target", required=True, metavar="PATH", help="A new workspace file to replay into.")
@click.option("--progress", is_flag=True, help="Show a progress bar on stderr.")
@workspace_options
@click.pass_context
def replay(ctx: click.Context, target: str, progress: bool) -> None:
    """Rebuild the workspace from its ledger alone into a new file and compare every projection."""
    from grace_core.workspace import projection_differences
    from grace_core.workspace import replay as replay_ledger

    with _workspace(ctx) as ws:
        started = time.perf_counter()
        result = replay_ledger(ws, target, progress=progress)
        try:
            copied = result.ledger.head[0]
            diffs = projection_differences(ws, result)
        finally:
            result.close()
    click.echo(f"replayed {copied} events into {result.path} in {time.perf_counter() - started:.2f} s")
    if not diffs:
        click.echo("projections equal")
        return
    click.echo("projections differ: " + ", ".join(f"{table} ({n} rows)" for table, n in diffs.items()))
    ctx.exit(1)


@cli.command()
@click.option("--prometheus", is_flag=True, help="Prometheus text exposition format.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per metric and label set.")
@workspace_options
@click.pass_context
def metrics(ctx: click.Context, prometheus: bool, as_json: bool) -> None:
    """Every metric as it stands: counters' totals, gauges' last reading, histograms' quantiles."""
    if prometheus and as_json:
        raise click.UsageError("choose one of --prometheus and --json")
    with _workspace(ctx) as ws:
        if prometheus:
            click.echo(ws.metrics.prometheus(), nl=False)
            return
        rows = _records(ws.metrics.summary())
    columns = ["metric", "kind", "labels", "value", "count", "sum", "p50", "p99"]
    _show(rows, columns, as_json, json_fields="all", empty="no metrics yet")


@cli.command()
@click.option("--quick", is_flag=True, help="Sizes about 10x smaller: seconds instead of a minute.")
@click.option(
    "--only", multiple=True, metavar="NAME", help="Run only this benchmark or figure (glob; repeatable)."
)
@click.option("--progress", is_flag=True, help="Show progress and each figure on stderr.")
@click.option(
    "--scale",
    type=click.FloatRange(min=0, min_open=True),
    default=1.0,
    hidden=True,
    help="Multiply every size and duration (tests use a tiny one).",
)
@workspace_options
def bench(quick: bool, only: tuple[str, ...], progress: bool, scale: float) -> None:
    """Measure every figure against its peer in the same run; one JSON line per figure.

    The benchmarks make their own temporary workspaces; --workspace is not used.
    """
    try:
        from grace_core import bench as benchmarks
    except ImportError as exc:
        raise WorkspaceError(f"the benchmarks are not available in this installation ({exc})") from exc
    try:
        for figure in benchmarks.run(quick=quick, only=list(only) or None, progress=progress, scale=scale):
            _echo_json(figure)
    except BenchError as exc:  # an unknown --only name
        raise click.UsageError(str(exc)) from exc


# -- lab -----------------------------------------------------------------------------------------------------
def notebooks_dir() -> Path:
    """The repository's notebooks/ (the parent of the package), or the current directory when installed."""
    candidate = Path(__file__).resolve().parents[2] / "notebooks"
    return candidate if candidate.is_dir() else Path.cwd()


@cli.command()
@click.option("--port", type=click.IntRange(1, 65535), default=8888, show_default=True)
@click.option("--no-browser", is_flag=True, help="Do not open a browser.")
@workspace_options
@click.pass_context
def lab(ctx: click.Context, port: int, no_browser: bool) -> None:
    """Run JupyterLab on the notebooks, with GRACE_WORKSPACE set (a new workspace gets the demo first)."""
    import importlib.util

    path = _path(ctx)
    if _snapshot(ctx) or path == MEMORY:
        raise click.UsageError("`grace lab` needs a workspace file the notebooks can write; drop --snapshot")
    if importlib.util.find_spec("jupyterlab") is None:
        raise WorkspaceError("JupyterLab is not installed; pip install 'grace-workbench[notebooks]'")
    path = str(Path(path).expanduser().resolve())
    if not Path(path).exists():
        with open_workspace(path) as ws:
            seed_demo(ws)
    root = notebooks_dir()
    argv = [
        sys.executable,
        "-m",
        "jupyterlab",
        "--ServerApp.ip=127.0.0.1",
        f"--ServerApp.port={port}",
        f"--ServerApp.root_dir={root}",
    ]
    if no_browser:
        argv.append("--ServerApp.open_browser=False")
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        argv.append("--allow-root")  # JupyterLab refuses to run as root without it
    click.echo(f"JupyterLab on http://127.0.0.1:{port}/lab for workspace {path} (notebooks in {root})")
    sys.stdout.flush()
    sys.stderr.flush()
    # Replace this process: Ctrl-C and signals go straight to JupyterLab.
    os.execve(sys.executable, argv, {**os.environ, str(settings.WORKSPACE.env): path})  # noqa: S606


# -- commands of the other engines ------------------------------------------------------------------------------
# Each module of this package adds its own commands to ``cli`` when imported; importing them all here means a new
# engine's commands appear by adding its module, with no list to keep in step.
def _load_command_modules() -> None:
    import importlib
    import pkgutil

    for module in pkgutil.iter_modules(__path__):
        if not module.name.startswith("_"):
            importlib.import_module(f"{__name__}.{module.name}")


_load_command_modules()


# -- entry point ---------------------------------------------------------------------------------------------
def _fail(message: str) -> NoReturn:
    click.echo("grace: error: " + " ".join(message.split()), err=True)
    sys.exit(2)


def _shown(text: str) -> str:
    """An argument as the user typed it, bytes that are not UTF-8 as ``\\xff``."""
    return os.fsencode(text).decode("utf-8", "backslashreplace")


def _os_error(exc: OSError) -> str:
    what = exc.strerror or str(exc)
    return f"{_shown(str(exc.filename))}: {what}" if exc.filename is not None else what


def main(argv: Sequence[str] | None = None) -> None:
    """Run the command line; errors become one ``grace: error:`` line and exit status 2."""
    try:
        args = list(argv) if argv is not None else sys.argv[1:]
        for n, arg in enumerate(args, 1):
            if not arg.isascii():
                try:
                    arg.encode("utf-8")
                except UnicodeEncodeError:
                    _fail(f"argument {n} is not UTF-8 text: {_shown(arg)}")
        code = cli.main(args=args, prog_name="grace", standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("grace: interrupted", err=True)
        sys.exit(130)
    except click.ClickException as exc:
        _fail(exc.format_message())
    except GraceError as exc:
        _fail(str(exc))
    except duckdb.Error as exc:
        _fail(f"database error: {exc}")
    except BrokenPipeError:
        # The reader went away (`grace events tail | head`): stop quietly, as other Unix tools do.
        with contextlib.suppress(OSError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        sys.exit(0)
    except OSError as exc:  # a file named on the command line that cannot be read or written as asked
        _fail(_os_error(exc))
    except UnicodeError as exc:  # input (standard input, a file, the environment) that is not UTF-8 text
        _fail(f"the input is not UTF-8 text ({getattr(exc, 'reason', exc)})")
    sys.exit(code if isinstance(code, int) else 0)
