"""The MLDL engine: train, evaluate, register, deploy and load models, with the registry on the ledger.

The registry works in the manner of MLflow, and every part of it is a projection of ``mldl.*`` events, so
replaying the ledger rebuilds it:

* **datasets** by content digest (sha256 of a canonical serialisation), with row count, schema, label
  counts and the generator call that makes them again (``mldl.dataset_registered``, once per digest);
* **runs**: parameters, seed, code version (Grace's version and a digest of the trainer's source), status,
  start and end on the workspace clock, the held-out metrics and a learning curve with one batch of metrics per
  step (``mldl.run_started``, ``mldl.metric_logged``, ``mldl.training_completed`` / ``mldl.training_failed``);
* **model versions**: a run's model, saved as an artifact in the workspace directory (``<file>.artifacts/
  models/<name>/<version>/model.pkl``; a temporary directory owned by an in-memory workspace), its sha256 on
  the ledger and checked on every load (``mldl.model_registered``);
* **aliases** (``champion``, ``challenger``, ...) instead of stages; setting one is a deployment, governed by
  ``model.deploy`` (``mldl.deployed``, ``mldl.alias_removed``);
* **evaluations** of a version on a dataset (``mldl.model_evaluated``).

The events are causally linked: a deployment is caused by the registration, which is caused by the run's
completion, which is caused by its start, which is caused by the registration of its training data. So
``ws.causal.lineage(deployed_event_id)`` walks from a deployment back to the data.

Two models the system uses: the prompt-injection classifier (kind ``injection``, model ``prompt-injection``),
whose champion MLDL registers with Hunter as a detector of chat texts (``hunter.register_detector``; undeploying
it unregisters the detector), and the metrics anomaly detector (kind ``anomaly``,
model ``metrics-anomaly``), which ``anomalies()`` uses (self-healing reads it).

A new workspace is protected from its first event on: genesis installs the prompt-injection model that ships
with Grace (``mldl/data/prompt-injection.pkl.xz``, trained on external corpora by ``python -m
grace_core.mldl.external --write``; its manifest holds the sha256, dataset digest, parameters and held-out
metrics) as version 1 and champion of ``prompt-injection``, in one ``mldl.model_installed`` event (a dataset, a
finished run, a version and the alias in the projection). Nothing is read but the small manifest: the
weights load, verified, on the first chat scan.

Artifacts are pickles, which run code when loaded: a model is loaded only from bytes whose sha256
matches the digest recorded on the ledger when it was registered, so a file changed afterwards is refused.
"""

from __future__ import annotations

import hashlib
import json
import lzma
import os
import pickle
import re
import shutil
import tempfile
import threading
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import pandas as pd

from grace_core import __version__
from grace_core.causal import handling
from grace_core.errors import ArtifactError, MetricsError, ModelError, ReadOnlyError
from grace_core.events import Event
from grace_core.hunter.scanner import Finding
from grace_core.times import TS

from .anomaly import LABEL_COLUMNS, AnomalyDetector, AnomalyTrainer, make_metric_frame
from .common import code_digest, dataset_digest, dataset_schema, jsonable_metrics, label_counts
from .injection import InjectionTrainer, make_dataset

if TYPE_CHECKING:
    from collections.abc import Callable

    from grace_core.governance import Governance
    from grace_core.hunter import Hunter
    from grace_core.workspace import Workspace

__all__ = [
    "ANOMALY_MODEL",
    "INJECTION_MODEL",
    "INJECTION_RULE",
    "MLDL",
    "TRAINERS",
    "Dataset",
    "ModelVersion",
    "Run",
    "Trainer",
]

INJECTION_MODEL = "prompt-injection"  # the model Hunter consults (its champion) on chat texts
ANOMALY_MODEL = "metrics-anomaly"  # the model anomalies() uses (its champion)
INJECTION_RULE = "ml.prompt_injection"  # the rule id of the classifier's findings
ARTIFACT = "model.pkl"
PACKAGED = "package:"  # an artifact path in the package's data folder (the shipped default model)
DATA = Path(__file__).with_name("data")
_NAME = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,63}$")
_ALIAS = re.compile(r"^[a-z][a-z0-9_-]{0,31}$")
_TOPICS = (
    "mldl.model_installed",
    "mldl.dataset_registered",
    "mldl.run_started",
    "mldl.metric_logged",
    "mldl.training_completed",
    "mldl.training_failed",
    "mldl.model_registered",
    "mldl.deployed",
    "mldl.alias_removed",
    "mldl.model_evaluated",
)
# Who consumes a deployed model of each kind: the governance context of a deployment names it.
_TARGETS = {"injection": "hunter", "anomaly": "healing"}


class Trainer(Protocol):
    """What ``train`` needs of a trainer: its kind, default params, a held-out split, fit and evaluate."""

    kind: str
    defaults: Mapping[str, Any]

    def split(
        self, frame: pd.DataFrame, *, holdout: float, seed: int
    ) -> tuple[pd.DataFrame, pd.DataFrame]: ...

    def fit(
        self,
        frame: pd.DataFrame,
        *,
        params: Mapping[str, Any],
        seed: int,
        log: Callable[[int, Mapping[str, float]], None],
    ) -> Any: ...

    def evaluate(self, model: Any, frame: pd.DataFrame) -> dict[str, float]: ...


TRAINERS: dict[str, Callable[[], Trainer]] = {"injection": InjectionTrainer, "anomaly": AnomalyTrainer}
# The data a kind trains on when none is given: (generator, its call as recorded, rows).
_DEFAULT_DATA: dict[str, Callable[[int], tuple[pd.DataFrame, str]]] = {
    "injection": lambda seed: (
        make_dataset(2000, seed=seed),
        f"grace_core.mldl.make_dataset(2000, seed={seed})",
    ),
    "anomaly": lambda seed: (
        make_metric_frame(2880, seed=seed),
        f"grace_core.mldl.make_metric_frame(2880, seed={seed})",
    ),
}


@dataclass(frozen=True)
class Dataset:
    digest: str
    name: str
    rows: int
    schema: dict[str, str]
    labels: dict[str, int] | None
    source: str
    event_id: str


@dataclass
class Run:
    """A training run. ``model`` is the fitted object while the run is in this process (else None)."""

    run_id: str
    name: str
    kind: str
    status: str
    params: dict[str, Any]
    seed: int
    code_version: dict[str, str]
    datasets: dict[str, str]
    metrics: dict[str, float | None]
    started_at: datetime
    ended_at: datetime | None
    duration_s: float | None
    artifact_path: str | None
    artifact_sha256: str | None
    actor: str
    error: str | None = None
    model: Any = field(default=None, repr=False, compare=False)


@dataclass(frozen=True)
class ModelVersion:
    name: str
    version: int
    kind: str
    run_id: str
    artifact_path: str
    artifact_sha256: str
    artifact_bytes: int
    metrics: dict[str, float | None]
    datasets: dict[str, str]
    aliases: tuple[str, ...]
    registered_by: str
    registered_at: datetime
    description: str
    event_id: str


def _check_name(name: str) -> str:
    if not isinstance(name, str) or not _NAME.match(name):
        raise ModelError(
            f"bad model name {name!r}: lower-case letters, digits, '.', '_' and '-', starting with a letter or "
            "digit, at most 64 characters"
        )
    return name


def _sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


class MLDL:
    """The model registry and trainer of one workspace (``ws.mldl``)."""

    def __init__(self, ws: Workspace, *, governance: Governance, hunter: Hunter) -> None:
        self._ws = ws
        self._governance = governance
        self._hunter = hunter
        self._lock = threading.Lock()
        self._tmp: str | None = None
        self._aliases_generation = 0  # bumped when an alias changes; the cached champions follow lazily
        self._champions: dict[str, tuple[int, Any, int | None]] = {}
        ws.projections.register(
            "mldl",
            "mldl.*",
            self._apply,
            tables=[
                "mldl_datasets",
                "mldl_runs",
                "mldl_metrics",
                "mldl_model_versions",
                "mldl_aliases",
                "mldl_evaluations",
            ],
        )
        self._sync_detector()

    # -- the shipped default ---------------------------------------------------------------------------------
    def seed_defaults(self) -> None:
        """Install the shipped prompt-injection model as champion (genesis: one ``mldl.model_installed`` event)."""
        try:
            manifest = json.loads((DATA / f"{INJECTION_MODEL}.json").read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise ArtifactError(
                f"the shipped {INJECTION_MODEL} model's manifest is missing or broken: {exc}"
            ) from exc
        report = manifest["metrics"]
        held = report["held_out"]
        # The data sets' own test splits first; whole families and whole corpora held out beside them, prefixed.
        others = {
            prefix: manifest.get(f"metrics_{prefix}", {}).get("held_out", {})
            for prefix in ("family_holdout", "corpus_holdout")
        }
        metrics = jsonable_metrics(
            {
                "threshold": report["threshold"],
                **held,
                **{f"{prefix}_{k}": v for prefix, part in others.items() for k, v in part.items()},
            }
        )
        dataset = manifest["dataset"]
        self._ws.publish(
            "mldl.model_installed",
            {
                "name": manifest["name"],
                "kind": manifest["kind"],
                "alias": "champion",
                "run_id": f"installed-{manifest['sha256'][7:19]}",
                "params": manifest["params"],
                "seed": manifest["seed"],
                "code_version": {"grace": manifest["code"]["grace"], "digest": manifest["code"]["trainer"]},
                "artifact": {
                    "path": PACKAGED + manifest["artifact"],
                    "sha256": manifest["sha256"],
                    "bytes": manifest["bytes"],
                },
                "dataset": {
                    "digest": dataset["digest"],
                    "name": f"{manifest['name']}/train",
                    "rows": dataset["rows"],
                    "schema": {"text": "str", "label": "int64"},
                    "labels": dataset["labels"],
                    "source": f"external corpora ({', '.join(dataset['corpora'])}) and Grace's benign chat; "
                    f"{manifest['command']}",
                },
                "metrics": metrics,
                "description": (
                    "shipped default: trained on external corpora, scored on their own test splits, "
                    "with families and whole corpora held out"
                ),
            },
            actor="system",
            resource=f"model:{manifest['name']}",
        )

    # -- where artifacts live ----------------------------------------------------------------------------------
    @property
    def artifact_root(self) -> Path:
        """``<workspace file>.artifacts`` (or a temporary directory for an in-memory workspace)."""
        if self._ws.path != ":memory:":
            root = Path(self._ws.path + ".artifacts")
            # An exported snapshot (``<file>.snapshot``) reads the artifacts of the workspace it copies.
            if self._ws.read_only and not root.exists() and self._ws.path.endswith(".snapshot"):
                return Path(self._ws.path.removesuffix(".snapshot") + ".artifacts")
            return root
        with self._lock:
            if self._tmp is None:
                self._tmp = tempfile.mkdtemp(prefix="grace-artifacts-")
            return Path(self._tmp)

    def close(self) -> None:
        """Remove the temporary artifact directory of an in-memory workspace."""
        if self._tmp is not None:
            shutil.rmtree(self._tmp, ignore_errors=True)
            self._tmp = None

    def _write_artifact(self, relative: str, data: bytes) -> None:
        path = self.artifact_root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_bytes(data)
        os.replace(tmp, path)

    def _read_artifact(self, relative: str, sha256: str, *, what: str) -> bytes:
        path = (
            DATA / relative[len(PACKAGED) :]
            if relative.startswith(PACKAGED)
            else self.artifact_root / relative
        )
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise ArtifactError(f"the artifact of {what} is missing or unreadable at {path}: {exc}") from exc
        found = _sha256(data)
        if found != sha256:
            raise ArtifactError(
                f"refusing to load {what}: its artifact {path} was changed after it was recorded "
                f"(sha256 on the ledger {sha256}, file {found}); a pickle that does not match its digest is "
                "never loaded"
            )
        return data

    # -- datasets ----------------------------------------------------------------------------------------------
    def register_dataset(
        self, frame: pd.DataFrame, *, name: str, actor: str, source: str = "", label: str | None = None
    ) -> Dataset:
        """Record a dataset by its digest (once: the same data registered again returns the first record)."""
        digest = dataset_digest(frame)
        known = self._dataset_row(digest)
        if known is not None:
            return known
        self._writable()
        if label is None:
            label = next((c for c in ("label", "anomaly") if c in frame), None)
        payload = {
            "digest": digest,
            "name": name,
            "rows": len(frame),
            "schema": dataset_schema(frame),
            "labels": label_counts(frame, label),
            "source": source,
        }
        self._ws.publish("mldl.dataset_registered", payload, actor=actor, resource=f"dataset:{digest}")
        found = self._dataset_row(digest)
        assert found is not None
        return found

    def datasets(self) -> pd.DataFrame:
        return self._ws.sql("SELECT * FROM mldl_datasets ORDER BY registered_at, digest")

    def _dataset_row(self, digest: str) -> Dataset | None:
        row = (
            self._ws.ledger.reader()
            .execute(
                "SELECT digest, name, rows, schema, labels, source, event_id FROM mldl_datasets WHERE digest = ?",
                [digest],
            )
            .fetchone()
        )
        if row is None:
            return None
        return Dataset(
            str(row[0]), str(row[1]), int(row[2]), json.loads(row[3]),
            json.loads(row[4]) if row[4] else None, str(row[5]), str(row[6]),
        )  # fmt: skip

    # -- training ----------------------------------------------------------------------------------------------
    def train(
        self,
        name: str,
        trainer: str | Trainer = "injection",
        dataset: pd.DataFrame | None = None,
        *,
        params: Mapping[str, Any] | None = None,
        seed: int | None = None,
        actor: str,
        test: pd.DataFrame | None = None,
        holdout: float = 0.25,
        source: str = "",
    ) -> Run:
        """Train a model for ``name`` and record the run; returns it (with the fitted ``model``).

        ``trainer`` is a kind (``"injection"``, ``"anomaly"``) or a trainer object. ``dataset`` defaults to the
        kind's seeded generator; ``test`` (default: ``holdout`` of the dataset, split by the trainer) is held
        out and gives the run's metrics. Governed by ``model.train`` on ``model:<name>``.
        """
        self._writable()
        _check_name(name)
        impl = self._trainer(trainer)
        kind = str(impl.kind)
        unknown = sorted(set(params or {}) - set(impl.defaults))
        if unknown:
            raise ModelError(
                f"unknown parameter(s) {', '.join(unknown)} for a {kind} model; known: "
                f"{', '.join(sorted(impl.defaults))}"
            )
        merged = {**impl.defaults, **(params or {})}
        seed = int(seed if seed is not None else (self._ws.seed or 0))
        self._governance.check(actor, "model.train", resource=f"model:{name}", context={"kind": kind})
        if dataset is None:
            if kind not in _DEFAULT_DATA:
                raise ModelError(f"a {kind} trainer needs a dataset")
            dataset, source = _DEFAULT_DATA[kind](seed)
        if test is None:
            train_df, test_df = impl.split(dataset, holdout=holdout, seed=seed)
            test_source = f"{source} [held-out {holdout:g}, seed {seed}]" if source else ""
            train_source = f"{source} [training {1 - holdout:g}, seed {seed}]" if source else ""
        else:
            train_df, test_df = dataset, test
            train_source, test_source = source, ""
        if len(train_df) == 0 or len(test_df) == 0:
            raise ModelError("training needs rows to train on and held-out rows to evaluate on")
        train_ds = self.register_dataset(train_df, name=f"{name}/train", actor=actor, source=train_source)
        test_ds = self.register_dataset(test_df, name=f"{name}/test", actor=actor, source=test_source)
        run_id = self._ws.mesh.new_id()
        code = {"grace": __version__, "trainer": f"{type(impl).__module__}.{type(impl).__qualname__}"}
        code["digest"] = code_digest(impl)
        started_at = self._ws.clock.time()
        with handling(self._ws.ledger.get(train_ds.event_id)):
            start = self._ws.publish(
                "mldl.run_started",
                {
                    "run_id": run_id,
                    "name": name,
                    "kind": kind,
                    "params": _jsonable(merged),
                    "seed": seed,
                    "code_version": code,
                    "datasets": {"train": train_ds.digest, "test": test_ds.digest},
                },
                actor=actor,
                resource=f"model:{name}",
            )
        with handling(start):
            try:
                model = impl.fit(train_df, params=merged, seed=seed, log=self._logger(run_id, name, actor))
                metrics = jsonable_metrics(impl.evaluate(model, test_df))
                data = pickle.dumps(model, protocol=5)
                relative = f"runs/{run_id}/{ARTIFACT}"
                self._write_artifact(relative, data)
            except Exception as exc:
                self._ws.publish(
                    "mldl.training_failed",
                    {"run_id": run_id, "error": f"{type(exc).__name__}: {exc}"[:2000],
                     "duration_s": self._ws.clock.time() - started_at},
                    actor=actor,
                    resource=f"model:{name}",
                )  # fmt: skip
                raise ModelError(
                    f"training run {run_id} of {name} failed: {type(exc).__name__}: {exc}"
                ) from exc
            self._ws.publish(
                "mldl.training_completed",
                {
                    "run_id": run_id,
                    "metrics": metrics,
                    "artifact": {"path": relative, "sha256": _sha256(data), "bytes": len(data)},
                    "duration_s": self._ws.clock.time() - started_at,
                },
                actor=actor,
                resource=f"model:{name}",
            )
        run = self.run(run_id)
        run.model = model
        return run

    def _logger(self, run_id: str, name: str, actor: str) -> Callable[[int, Mapping[str, float]], None]:
        def log(step: int, metrics: Mapping[str, float]) -> None:
            self._ws.publish(
                "mldl.metric_logged",
                {"run_id": run_id, "step": int(step), "metrics": jsonable_metrics(metrics)},
                actor=actor,
                resource=f"model:{name}",
            )

        return log

    @staticmethod
    def _trainer(trainer: str | Trainer) -> Trainer:
        if isinstance(trainer, str):
            if trainer not in TRAINERS:
                raise ModelError(f"no trainer of kind {trainer!r}; known: {', '.join(sorted(TRAINERS))}")
            return TRAINERS[trainer]()
        for attr in ("kind", "defaults", "split", "fit", "evaluate"):
            if not hasattr(trainer, attr):
                raise ModelError(f"a trainer needs {attr!r} (see grace_core.mldl.Trainer)")
        return trainer

    # -- runs --------------------------------------------------------------------------------------------------
    def run(self, run_id: str) -> Run:
        row = self._ws.sql("SELECT * FROM mldl_runs WHERE run_id = ?", [run_id])
        if row.empty:
            raise ModelError(f"no run {run_id!r}; see mldl.runs()")
        r = row.iloc[0]
        return Run(
            run_id=str(r["run_id"]),
            name=str(r["model"]),
            kind=str(r["kind"]),
            status=str(r["status"]),
            params=json.loads(r["params"]),
            seed=int(r["seed"]),
            code_version={"grace": str(r["grace_version"]), "digest": str(r["code_digest"])},
            datasets=json.loads(r["datasets"]),
            metrics=json.loads(r["metrics"]) if isinstance(r["metrics"], str) else {},
            started_at=r["started_at"].to_pydatetime(),
            ended_at=None if pd.isna(r["ended_at"]) else r["ended_at"].to_pydatetime(),
            duration_s=None if pd.isna(r["duration_s"]) else float(r["duration_s"]),
            artifact_path=r["artifact_path"] if isinstance(r["artifact_path"], str) else None,
            artifact_sha256=r["artifact_sha256"] if isinstance(r["artifact_sha256"], str) else None,
            actor=str(r["actor"]),
            error=r["error"] if isinstance(r["error"], str) else None,
        )

    def runs(
        self, name: str | None = None, *, status: str | None = None, kind: str | None = None
    ) -> pd.DataFrame:
        """Runs, oldest first (``params``, ``datasets`` and ``metrics`` as JSON text)."""
        where, params = _filters(model=name, status=status, kind=kind)
        return self._ws.sql(f"SELECT * FROM mldl_runs {where} ORDER BY started_at, run_id", params)

    def history(self, run_id: str) -> pd.DataFrame:
        """A run's learning curve: one row per step, one column per metric."""
        long = self._ws.sql(
            "SELECT step, key, value FROM mldl_metrics WHERE run_id = ? ORDER BY step, key", [run_id]
        )
        if long.empty:
            return pd.DataFrame(columns=["step"])
        return long.pivot(index="step", columns="key", values="value").reset_index().rename_axis(None, axis=1)

    def compare(self, run_ids: Sequence[str] | None = None, *, name: str | None = None) -> pd.DataFrame:
        """Runs side by side: one row per run, with its params (``param.*``) and metrics (``metric.*``)."""
        frame = self.runs(name)
        if run_ids is not None:
            missing = sorted(set(run_ids) - set(frame["run_id"]))
            if missing:
                raise ModelError(f"no run(s) {', '.join(missing)}")
            frame = frame.set_index("run_id").loc[list(run_ids)].reset_index()
        rows = []
        for _, r in frame.iterrows():
            row: dict[str, Any] = {
                "run_id": r["run_id"],
                "model": r["model"],
                "kind": r["kind"],
                "status": r["status"],
                "seed": int(r["seed"]),
                "code_digest": str(r["code_digest"])[:15],
                "duration_s": r["duration_s"],
            }
            row.update({f"param.{k}": v for k, v in json.loads(r["params"]).items()})
            metrics = json.loads(r["metrics"]) if isinstance(r["metrics"], str) else {}
            row.update({f"metric.{k}": v for k, v in metrics.items()})
            rows.append(row)
        return pd.DataFrame(rows)

    # -- registering -------------------------------------------------------------------------------------------
    def register(
        self, run: Run | str, *, actor: str | None = None, name: str | None = None, description: str = ""
    ) -> ModelVersion:
        """Make a finished run's model a new version of its model (or of ``name``); governed ``model.register``."""
        self._writable()
        run = self.run(run if isinstance(run, str) else run.run_id)
        if run.status != "finished" or run.artifact_path is None or run.artifact_sha256 is None:
            raise ModelError(f"run {run.run_id} is {run.status}; only a finished run can be registered")
        name = _check_name(name or run.name)
        actor = actor or run.actor
        self._governance.check(actor, "model.register", resource=f"model:{name}", context={"run": run.run_id})
        data = self._read_artifact(run.artifact_path, run.artifact_sha256, what=f"run {run.run_id}")
        row = (
            self._ws.ledger.reader()
            .execute("SELECT coalesce(max(version), 0) + 1 FROM mldl_model_versions WHERE name = ?", [name])
            .fetchone()
        )
        version = int(row[0]) if row else 1
        relative = f"models/{name}/{version}/{ARTIFACT}"
        self._write_artifact(relative, data)
        completed = self._ws.sql("SELECT end_event_id FROM mldl_runs WHERE run_id = ?", [run.run_id]).iloc[
            0, 0
        ]
        with handling(self._ws.ledger.get(str(completed))):
            self._ws.publish(
                "mldl.model_registered",
                {
                    "name": name,
                    "version": version,
                    "kind": run.kind,
                    "run_id": run.run_id,
                    "artifact": {"path": relative, "sha256": run.artifact_sha256, "bytes": len(data)},
                    "metrics": run.metrics,
                    "datasets": run.datasets,
                    "description": description,
                },
                actor=actor,
                resource=f"model:{name}",
            )
        return self.version(name, version)

    def version(self, name: str, version: int | None = None, *, alias: str | None = None) -> ModelVersion:
        """One model version: by number, by alias, or (neither) the latest."""
        cur = self._ws.ledger.reader()
        if version is None and alias is not None:
            row = cur.execute(
                "SELECT version FROM mldl_aliases WHERE name = ? AND alias = ?", [name, alias]
            ).fetchone()
            if row is None:
                known = cur.execute(
                    "SELECT count(*) FROM mldl_model_versions WHERE name = ?", [name]
                ).fetchone()
                if not known or not known[0]:
                    raise ModelError(f"no model {name!r}; see mldl.versions()")
                raise ModelError(f"model {name!r} has no {alias!r}; deploy a version with mldl.deploy()")
            version = int(row[0])
        if version is None:
            row = cur.execute(
                "SELECT max(version) FROM mldl_model_versions WHERE name = ?", [name]
            ).fetchone()
            if row is None or row[0] is None:
                raise ModelError(f"no model {name!r}; see mldl.versions()")
            version = int(row[0])
        frame = self._ws.sql(
            "SELECT * FROM mldl_model_versions WHERE name = ? AND version = ?", [name, int(version)]
        )
        if frame.empty:
            known = cur.execute("SELECT count(*) FROM mldl_model_versions WHERE name = ?", [name]).fetchone()
            if not known or not known[0]:
                raise ModelError(f"no model {name!r}; see mldl.versions()")
            raise ModelError(f"model {name!r} has no version {version}; see mldl.versions({name!r})")
        r = frame.iloc[0]
        aliases = cur.execute(
            "SELECT alias FROM mldl_aliases WHERE name = ? AND version = ? ORDER BY alias",
            [name, int(version)],
        ).fetchall()
        return ModelVersion(
            name=str(r["name"]),
            version=int(r["version"]),
            kind=str(r["kind"]),
            run_id=str(r["run_id"]),
            artifact_path=str(r["artifact_path"]),
            artifact_sha256=str(r["artifact_sha256"]),
            artifact_bytes=int(r["artifact_bytes"]),
            metrics=json.loads(r["metrics"]),
            datasets=json.loads(r["datasets"]),
            aliases=tuple(str(a[0]) for a in aliases),
            registered_by=str(r["registered_by"]),
            registered_at=r["registered_at"].to_pydatetime(),
            description=str(r["description"]),
            event_id=str(r["event_id"]),
        )

    def versions(self, name: str | None = None) -> pd.DataFrame:
        """Model versions (newest last per model) with their aliases."""
        where, params = _filters(name=name)
        return self._ws.sql(
            "SELECT v.name, v.version, v.kind, v.run_id, "
            "coalesce((SELECT string_agg(a.alias, ',' ORDER BY a.alias) FROM mldl_aliases a "
            "WHERE a.name = v.name AND a.version = v.version), '') AS aliases, "
            "v.metrics, v.artifact_sha256, v.artifact_bytes, v.registered_by, v.registered_at, v.description "
            f"FROM mldl_model_versions v {where.replace('name', 'v.name')} ORDER BY v.name, v.version",
            params,
        )

    def models(self) -> pd.DataFrame:
        """One row per model: kind, versions, latest version and where its aliases point."""
        return self._ws.sql(
            "SELECT v.name, any_value(v.kind) AS kind, count(*) AS versions, max(v.version) AS latest, "
            "coalesce((SELECT string_agg(a.alias || '=' || a.version, ',' ORDER BY a.alias) FROM mldl_aliases a "
            "WHERE a.name = v.name), '') AS aliases, max(v.registered_at) AS updated_at "
            "FROM mldl_model_versions v GROUP BY v.name ORDER BY v.name"
        )

    # -- deploying ---------------------------------------------------------------------------------------------
    def deploy(
        self,
        name: str,
        version: int | ModelVersion,
        alias: str = "champion",
        *,
        actor: str,
        wait: float | None = None,
        approval_id: str | None = None,
    ) -> ModelVersion:
        """Point ``alias`` of model ``name`` at ``version`` (governed: ``model.deploy`` on ``model:<name>``).

        The governance context holds ``alias``, ``version``, ``kind``, ``target`` (who uses the model:
        ``hunter`` or ``healing``) and the version's held-out ``metrics``, so policies can, for example,
        refuse a champion whose F1 is below a floor. The artifact is verified before anything is recorded.
        """
        self._writable()
        if isinstance(version, ModelVersion):
            version = version.version
        if not isinstance(alias, str) or not _ALIAS.match(alias):
            raise ModelError(f"bad alias {alias!r}: a lower-case word like champion or challenger")
        mv = self.version(name, int(version))
        self._read_artifact(mv.artifact_path, mv.artifact_sha256, what=f"model {name} version {mv.version}")
        context = {
            "alias": alias,
            "version": mv.version,
            "kind": mv.kind,
            "target": _TARGETS.get(mv.kind, mv.kind),
            "metrics": mv.metrics,
        }
        self._governance.check(
            actor,
            "model.deploy",
            resource=f"model:{name}",
            context=context,
            wait=wait,
            approval_id=approval_id,
        )
        row = (
            self._ws.ledger.reader()
            .execute("SELECT version FROM mldl_aliases WHERE name = ? AND alias = ?", [name, alias])
            .fetchone()
        )
        with handling(self._ws.ledger.get(mv.event_id)):
            self._ws.publish(
                "mldl.deployed",
                {
                    "name": name,
                    "version": mv.version,
                    "alias": alias,
                    "previous": int(row[0]) if row else None,
                },
                actor=actor,
                resource=f"model:{name}",
            )
        return self.version(name, mv.version)

    def undeploy(self, name: str, alias: str = "champion", *, actor: str) -> None:
        """Remove an alias (governed like a deployment); a model without a champion is not used."""
        self._writable()
        mv = self.version(name, alias=alias)
        self._governance.check(
            actor, "model.deploy", resource=f"model:{name}",
            context={"alias": alias, "version": mv.version, "kind": mv.kind, "remove": True},
        )  # fmt: skip
        self._ws.publish(
            "mldl.alias_removed",
            {"name": name, "alias": alias, "version": mv.version},
            actor=actor,
            resource=f"model:{name}",
        )

    # -- loading and using -------------------------------------------------------------------------------------
    def load(self, name: str, alias: str | None = "champion", *, version: int | None = None) -> Any:
        """The model object of a version (by ``version``, else by ``alias``), its digest checked first."""
        mv = self.version(name, version) if version is not None else self.version(name, alias=alias)
        data = self._read_artifact(
            mv.artifact_path, mv.artifact_sha256, what=f"model {name} version {mv.version}"
        )
        if mv.artifact_path.endswith(".xz"):  # the shipped default is stored compressed
            data = lzma.decompress(data)
        # Unpickling runs code: these bytes are exactly the ones whose digest the ledger recorded.
        return pickle.loads(data)  # noqa: S301 - verified against the ledger's sha256 just above

    def champion(self, name: str, alias: str = "champion") -> tuple[Any, int] | None:
        """The deployed model of ``name`` and its version, cached until an alias changes (None if none)."""
        generation = self._aliases_generation
        cached = self._champions.get(f"{name}@{alias}")
        if cached is not None and cached[0] == generation:
            return None if cached[1] is None else (cached[1], int(cached[2] or 0))
        row = (
            self._ws.ledger.reader()
            .execute("SELECT version FROM mldl_aliases WHERE name = ? AND alias = ?", [name, alias])
            .fetchone()
        )
        model, version = (None, None) if row is None else (self.load(name, version=int(row[0])), int(row[0]))
        self._champions[f"{name}@{alias}"] = (generation, model, version)
        return None if model is None else (model, int(version or 0))

    def injection_findings(self, text: str, *, target: str = "chat") -> list[Finding]:
        """The detector MLDL registers with Hunter: a finding ``ml.prompt_injection`` when the deployed champion
        of ``prompt-injection`` gives ``text`` a probability at or above its threshold. No champion: none."""
        found = self.champion(INJECTION_MODEL)
        if found is None or not text.strip():
            return []
        model, version = found
        p = float(model.predict_proba([text])[0])
        if p < float(getattr(model, "threshold", 0.5)):
            return []
        severity = "high" if p >= 0.9 else "medium"
        detail = f"p={p:.3f} ({INJECTION_MODEL} v{version})"
        return [
            Finding(
                INJECTION_RULE,
                severity,
                "injection",
                target,
                0,
                len(text),
                1,
                1,
                f"[model: {detail}]",
                detail,
            )
        ]

    def anomaly_detector(self, name: str = ANOMALY_MODEL, alias: str = "champion") -> AnomalyDetector:
        """The deployed anomaly detector, or the untrained robust-z baseline when none is deployed."""
        found = self.champion(name, alias)
        return AnomalyDetector.baseline() if found is None else found[0]

    def metric_frame(
        self,
        metrics: Iterable[str] | None = None,
        *,
        since: datetime | float | None = None,
        until: datetime | float | None = None,
        every: str = "1 minute",
    ) -> pd.DataFrame:
        """Workspace metrics as a frame indexed by time bucket, one column per metric.

        Counters give their count per bucket (0 where none), gauges their mean (carried forward), histograms
        their mean observation; label sets of a metric are summed (counters) or averaged.
        """
        names = list(metrics) if metrics is not None else list(self._ws.metrics.names)
        start, end = _when(since), _when(until)
        columns: dict[str, pd.Series] = {}
        counters = set()
        for metric in names:
            try:
                series = self._ws.metrics.series(metric, since=start, until=end, every=every)
            except MetricsError:
                continue  # not recorded yet (a health check may ask before the first sample): nothing to score
            if series.empty:
                continue
            if "total" in series:  # a counter
                counters.add(metric)
                columns[metric] = series.groupby("ts")["count"].sum().astype(float)
            else:
                columns[metric] = series.groupby("ts")["mean"].mean().astype(float)
        if not columns:
            return pd.DataFrame(index=pd.DatetimeIndex([], name="ts", tz="UTC"))
        frame = pd.DataFrame(columns).sort_index()
        full = pd.date_range(frame.index.min(), frame.index.max(), freq=pd.Timedelta(every), name="ts")
        frame = frame.reindex(full)
        for metric in frame.columns:
            frame[metric] = frame[metric].fillna(0.0) if metric in counters else frame[metric].ffill().bfill()
        return frame

    def anomalies(
        self,
        data: pd.DataFrame | Iterable[str] | None = None,
        *,
        since: datetime | float | None = None,
        until: datetime | float | None = None,
        every: str = "1 minute",
        name: str = ANOMALY_MODEL,
        alias: str = "champion",
        only: bool = False,
    ) -> pd.DataFrame:
        """Score metrics for anomalies with the deployed detector (the robust-z baseline when none is).

        ``data``: a frame (index = time, one numeric column per metric) or metric names of this workspace
        (default: all; names not recorded yet are skipped), read over ``since``..``until`` (datetimes or epoch
        seconds of the workspace clock) in ``every`` buckets.
        Returns one row per bucket: ``ts, score, anomaly, metric, value, z, model`` (``only=True``: the
        anomalous rows only).
        """
        frame = (
            data
            if isinstance(data, pd.DataFrame)
            else self.metric_frame(data, since=since, until=until, every=every)
        )
        found = self.champion(name, alias)
        detector = AnomalyDetector.baseline() if found is None else found[0]
        label = "baseline robust z" if found is None else f"{name} v{found[1]} ({alias})"
        if frame.drop(columns=[c for c in LABEL_COLUMNS if c in frame]).select_dtypes(include="number").empty:
            scored = pd.DataFrame(columns=["ts", "score", "anomaly", "metric", "value", "z"])
        else:
            scored = detector.score(frame)
        scored["model"] = label
        return scored[scored["anomaly"]].reset_index(drop=True) if only else scored

    # -- evaluating and lineage --------------------------------------------------------------------------------
    def evaluate(
        self,
        model: ModelVersion | str,
        dataset: pd.DataFrame,
        *,
        version: int | None = None,
        alias: str | None = "champion",
        actor: str = "system",
        source: str = "",
    ) -> dict[str, float | None]:
        """Metrics of a model version on a labelled dataset; recorded as ``mldl.model_evaluated``."""
        mv = model if isinstance(model, ModelVersion) else (
            self.version(model, version) if version is not None else self.version(model, alias=alias)
        )  # fmt: skip
        impl = TRAINERS[mv.kind]() if mv.kind in TRAINERS else None
        if impl is None:
            raise ModelError(f"no built-in evaluation for a {mv.kind} model; use its trainer's evaluate()")
        obj = self.load(mv.name, version=mv.version)
        metrics = jsonable_metrics(impl.evaluate(obj, dataset))
        if not self._ws.read_only:
            ds = self.register_dataset(dataset, name=f"{mv.name}/evaluation", actor=actor, source=source)
            with handling(self._ws.ledger.get(mv.event_id)):
                self._ws.publish(
                    "mldl.model_evaluated",
                    {"name": mv.name, "version": mv.version, "dataset": ds.digest, "metrics": metrics},
                    actor=actor,
                    resource=f"model:{mv.name}",
                )
        return metrics

    def evaluations(self, name: str | None = None) -> pd.DataFrame:
        where, params = _filters(name=name)
        return self._ws.sql(f"SELECT * FROM mldl_evaluations {where} ORDER BY ts, event_id", params)

    def lineage(self, name: str, version: int | None = None, *, alias: str | None = None) -> pd.DataFrame:
        """From a model version back to its data: version -> run -> datasets, then its deployments.

        One row per link: ``what`` (model_version, run, dataset:train, dataset:test, deployed), ``id``,
        ``detail`` and the ``event_id`` that recorded it.
        """
        mv = self.version(name, version, alias=alias) if (version or alias) else self.version(name)
        run = self.run(mv.run_id)
        rows: list[dict[str, Any]] = [
            {"what": "model_version", "id": f"{mv.name}/{mv.version}",
             "detail": f"sha256 {mv.artifact_sha256[7:19]}..., aliases: {', '.join(mv.aliases) or '-'}",
             "event_id": mv.event_id},
            {"what": "run", "id": run.run_id,
             "detail": f"{run.kind}, seed {run.seed}, params {json.dumps(run.params, sort_keys=True)}, "
                       f"code {run.code_version['digest'][7:19]}..., grace {run.code_version['grace']}",
             "event_id": str(self._ws.sql("SELECT event_id FROM mldl_runs WHERE run_id = ?", [run.run_id]).iloc[0, 0])},
        ]  # fmt: skip
        for role, digest in sorted(run.datasets.items(), key=lambda kv: kv[0] != "train"):
            ds = self._dataset_row(digest)
            detail = (
                f"{ds.rows} rows, {ds.name}" + (f", from {ds.source}" if ds and ds.source else "")
                if ds
                else "?"
            )
            rows.append(
                {
                    "what": f"dataset:{role}",
                    "id": digest,
                    "detail": detail,
                    "event_id": ds.event_id if ds else None,
                }
            )
        deployed = self._ws.sql(
            "SELECT id, payload->>'$.alias' AS alias, actor, ts FROM events WHERE topic = 'mldl.deployed' "
            "AND parent_id = ? ORDER BY seq",
            [mv.event_id],
        )
        for _, d in deployed.iterrows():
            rows.append({"what": "deployed", "id": f"{mv.name}@{d['alias']}",
                         "detail": f"by {d['actor']} at {d['ts']}", "event_id": d["id"]})  # fmt: skip
        return pd.DataFrame(rows, columns=["what", "id", "detail", "event_id"])

    # -- internals ---------------------------------------------------------------------------------------------
    def _writable(self) -> None:
        if self._ws.read_only:
            raise ReadOnlyError("a read-only snapshot cannot train, register or deploy models")

    def _apply(self, con: Any, events: list[Event]) -> None:
        if _apply(con, events):
            self._aliases_generation += 1
            for e in events:
                p = e.payload
                if e.topic in ("mldl.deployed", "mldl.alias_removed", "mldl.model_installed") and (
                    p["name"],
                    p["alias"],
                ) == (
                    INJECTION_MODEL,
                    "champion",
                ):
                    self._detector(deployed=e.topic != "mldl.alias_removed")

    def _sync_detector(self) -> None:
        """Register the injection detector with Hunter when the workspace opens with a champion deployed."""
        row = (
            self._ws.ledger.reader()
            .execute("SELECT 1 FROM mldl_aliases WHERE name = ? AND alias = 'champion'", [INJECTION_MODEL])
            .fetchone()
        )
        self._detector(deployed=row is not None)

    def _detector(self, *, deployed: bool) -> None:
        # The model's weights load on the first scan after a deployment (champion() caches them), not here.
        if deployed:
            self._hunter.register_detector(INJECTION_RULE, self.injection_findings, targets=("chat",))
        else:
            self._hunter.unregister_detector(INJECTION_RULE)


def _jsonable(value: Any) -> Any:
    return json.loads(json.dumps(value, default=lambda v: v.item() if hasattr(v, "item") else str(v)))


def _filters(**values: Any) -> tuple[str, list[Any]]:
    clauses, params = [], []
    for column, value in values.items():
        if value is not None:
            clauses.append(f"{column} = ?")
            params.append(value)
    return ("WHERE " + " AND ".join(clauses)) if clauses else "", params


def _when(value: datetime | float | None) -> datetime | None:
    if value is None or isinstance(value, datetime):
        return value
    return datetime.fromtimestamp(float(value), tz=UTC)


def _apply(con: Any, events: list[Event]) -> bool:
    """Projection of the mldl.* events. Returns whether an alias changed."""
    aliases_changed = False
    for e in events:
        p = e.payload
        if e.topic == "mldl.model_installed":
            aliases_changed = True
            _apply_installed(con, e)
        elif e.topic == "mldl.dataset_registered":
            con.execute(
                f"INSERT INTO mldl_datasets VALUES (?, ?, ?, ?, ?, ?, ?, {TS}, ?) ON CONFLICT DO NOTHING",
                [p["digest"], p["name"], p["rows"], json.dumps(p["schema"]),
                 None if p.get("labels") is None else json.dumps(p["labels"]), p.get("source", ""),
                 e.actor, e.ts_us, e.id],
            )  # fmt: skip
        elif e.topic == "mldl.run_started":
            code = p["code_version"]
            con.execute(
                f"INSERT INTO mldl_runs VALUES (?, ?, ?, 'running', ?, ?, ?, ?, ?, NULL, NULL, NULL, NULL, ?, "
                f"{TS}, NULL, NULL, ?, NULL)",
                [p["run_id"], p["name"], p["kind"], json.dumps(p["params"], sort_keys=True), p["seed"],
                 code["grace"], code["digest"], json.dumps(p["datasets"], sort_keys=True), e.actor, e.ts_us, e.id],
            )  # fmt: skip
        elif e.topic == "mldl.metric_logged":
            for key, value in sorted(p["metrics"].items()):
                con.execute(
                    f"INSERT INTO mldl_metrics VALUES (?, ?, ?, ?, {TS}, ?)",
                    [p["run_id"], p["step"], key, value, e.ts_us, e.id],
                )
        elif e.topic == "mldl.training_completed":
            art = p["artifact"]
            con.execute(
                f"UPDATE mldl_runs SET status = 'finished', metrics = ?, artifact_path = ?, artifact_sha256 = ?, "
                f"ended_at = {TS}, duration_s = ?, end_event_id = ? WHERE run_id = ?",
                [json.dumps(p["metrics"], sort_keys=True), art["path"], art["sha256"], e.ts_us,
                 p.get("duration_s"), e.id, p["run_id"]],
            )  # fmt: skip
        elif e.topic == "mldl.training_failed":
            con.execute(
                f"UPDATE mldl_runs SET status = 'failed', error = ?, ended_at = {TS}, duration_s = ?, "
                "end_event_id = ? WHERE run_id = ?",
                [p["error"], e.ts_us, p.get("duration_s"), e.id, p["run_id"]],
            )
        elif e.topic == "mldl.model_registered":
            art = p["artifact"]
            con.execute(
                f"INSERT INTO mldl_model_versions VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, {TS}, ?)",
                [p["name"], p["version"], p["kind"], p["run_id"], art["path"], art["sha256"], art["bytes"],
                 json.dumps(p["metrics"], sort_keys=True), json.dumps(p["datasets"], sort_keys=True),
                 p.get("description", ""), e.actor, e.ts_us, e.id],
            )  # fmt: skip
        elif e.topic == "mldl.deployed":
            aliases_changed = True
            con.execute(
                f"INSERT INTO mldl_aliases VALUES (?, ?, ?, ?, {TS}, ?) ON CONFLICT (name, alias) DO UPDATE SET "
                "version = excluded.version, deployed_by = excluded.deployed_by, "
                "deployed_at = excluded.deployed_at, event_id = excluded.event_id",
                [p["name"], p["alias"], p["version"], e.actor, e.ts_us, e.id],
            )
        elif e.topic == "mldl.alias_removed":
            aliases_changed = True
            con.execute("DELETE FROM mldl_aliases WHERE name = ? AND alias = ?", [p["name"], p["alias"]])
        elif e.topic == "mldl.model_evaluated":
            con.execute(
                f"INSERT INTO mldl_evaluations VALUES (?, ?, ?, ?, ?, ?, {TS})",
                [e.id, p["name"], p["version"], p["dataset"], json.dumps(p["metrics"], sort_keys=True),
                 e.actor, e.ts_us],
            )  # fmt: skip
    return aliases_changed


def _apply_installed(con: Any, e: Event) -> None:
    """Projection of ``mldl.model_installed``: its dataset, a finished run, the next version and the alias."""
    p = e.payload
    ds, art = p["dataset"], p["artifact"]
    datasets = json.dumps({"train": ds["digest"]}, sort_keys=True)
    metrics = json.dumps(p["metrics"], sort_keys=True)
    con.execute(
        f"INSERT INTO mldl_datasets VALUES (?, ?, ?, ?, ?, ?, ?, {TS}, ?) ON CONFLICT DO NOTHING",
        [ds["digest"], ds["name"], ds["rows"], json.dumps(ds["schema"]), json.dumps(ds["labels"]), ds["source"],
         e.actor, e.ts_us, e.id],
    )  # fmt: skip
    con.execute(
        "INSERT INTO mldl_runs VALUES (?, ?, ?, 'finished', ?, ?, ?, ?, ?, ?, ?, ?, NULL, ?, "
        f"{TS}, {TS}, NULL, ?, ?)",
        [p["run_id"], p["name"], p["kind"], json.dumps(p["params"], sort_keys=True), p["seed"],
         p["code_version"]["grace"], p["code_version"]["digest"], datasets, metrics, art["path"], art["sha256"],
         e.actor, e.ts_us, e.ts_us, e.id, e.id],
    )  # fmt: skip
    row = con.execute(
        "SELECT coalesce(max(version), 0) + 1 FROM mldl_model_versions WHERE name = ?", [p["name"]]
    ).fetchone()
    version = int(row[0])
    con.execute(
        f"INSERT INTO mldl_model_versions VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, {TS}, ?)",
        [p["name"], version, p["kind"], p["run_id"], art["path"], art["sha256"], art["bytes"], metrics, datasets,
         p.get("description", ""), e.actor, e.ts_us, e.id],
    )  # fmt: skip
    con.execute(
        f"INSERT INTO mldl_aliases VALUES (?, ?, ?, ?, {TS}, ?) ON CONFLICT (name, alias) DO UPDATE SET "
        "version = excluded.version, deployed_by = excluded.deployed_by, "
        "deployed_at = excluded.deployed_at, event_id = excluded.event_id",
        [p["name"], p["alias"], version, e.actor, e.ts_us, e.id],
    )
