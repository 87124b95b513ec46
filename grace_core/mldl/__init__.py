"""MLDL: train, evaluate, register, deploy and load models, with the registry on the ledger (``ws.mldl``).

* ``registry``: the ``MLDL`` engine (datasets, runs, model versions, aliases, evaluations; ``mldl.*`` events);
* ``injection``: the prompt-injection classifier and its seeded synthetic dataset;
* ``anomaly``: the metrics anomaly detector;
* ``common``: splits, metrics and digests shared by the trainers.
"""

from __future__ import annotations

from .anomaly import AnomalyDetector, AnomalyTrainer, make_metric_frame
from .injection import InjectionModel, InjectionTrainer, make_dataset
from .registry import (
    ANOMALY_MODEL,
    INJECTION_MODEL,
    INJECTION_RULE,
    MLDL,
    TRAINERS,
    Dataset,
    ModelVersion,
    Run,
    Trainer,
)

__all__ = [
    "ANOMALY_MODEL",
    "INJECTION_MODEL",
    "INJECTION_RULE",
    "MLDL",
    "TRAINERS",
    "AnomalyDetector",
    "AnomalyTrainer",
    "Dataset",
    "InjectionModel",
    "InjectionTrainer",
    "ModelVersion",
    "Run",
    "Trainer",
    "make_dataset",
    "make_metric_frame",
]
