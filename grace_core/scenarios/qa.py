"""The ``qa`` scenario: questions with gold answers, some answerable only once the loops turn experience into
knowledge.

From the seed, a **question set** (``lab``, the default, and the only one so far) draws twelve facts about a lab's
instruments and projects, each with a question and a gold answer:

``seeded``   (6) written into memory notes before the first question: calibration constants of instruments and
             principal investigators of projects. Chat can answer them from the start.
``learned``  (6) known to nobody at the start: what caused an instrument's outage, where a project's results
             were moved. Each comes up at a hidden hour of the first 14 as a **resolved conversation**: a
             technician reports the problem in chat and later resolves the conversation with a summary
             (``ws.chat.resolve``). Chat messages are not passages, so retrieval cannot find the fact until a loop
             makes it knowledge: reflection reports the resolution (insight ``resolution``), learning opens a
             ``knowledge`` task, and its handler writes the summary to a note under ``/knowledge`` with its
             provenance. With the loops off it stays unanswerable.

Every ``question_every`` simulated seconds an analyst asks one question drawn from all twelve (the same questions
at the same times in every run of a seed, loops on or off), each in a new conversation, through ``ws.chat`` and
so through ``ws.llm`` (prompt ``chat.answer``).

Scores over the questions asked in a window, as in SQuAD (Rajpurkar et al. 2016): the reply's first line (its
short answer), citations removed, is normalised (lower case; punctuation, articles and extra spaces removed) and
compared with the gold answer: ``exact_match`` (equal or not) and ``f1`` (token overlap), overall and for each
group (``f1_seeded``, ``f1_learned``; the learned questions are the knowledge-dependent ones).
"""

from __future__ import annotations

import functools
import random
import re
import string
from collections import Counter
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, ClassVar

from grace_core.errors import ScenarioError

from .base import Scenario, register
from .driver import Action

if TYPE_CHECKING:
    from grace_core.workspace import Workspace

__all__ = [
    "ASKER",
    "QUESTION_SETS",
    "QaScenario",
    "exact_match",
    "normalize_answer",
    "short_answer_of",
    "token_f1",
]

ASKER = "analyst"  # who asks the questions
TECHNICIAN = "technician"  # who reports and resolves the problems
LEAD = "lab-lead"  # the lab's admin (a workspace's first user is an admin)
PASSWORD = "qa scenario password 1234"  # noqa: S105 - a simulated user's password in a throwaway workspace

_INSTRUMENTS = (
    "cryostat", "spectrometer", "centrifuge", "sequencer", "microscope", "furnace", "diffractometer",
    "chromatograph", "lyophilizer", "rheometer", "calorimeter", "magnetometer",
)  # fmt: skip
_PROJECTS = (
    "Alpha", "Borealis", "Cobalt", "Dune", "Ember", "Fjord", "Granite", "Harbor", "Iris", "Juniper",
)  # fmt: skip
_PEOPLE = (
    "Mira Chen", "Omar Haddad", "Lena Novak", "Ravi Patel", "Sofia Reyes", "Tomas Berg", "Aiko Tanaka",
    "Kwame Mensah",
)  # fmt: skip
_CAUSES = (
    "a stuck helium valve", "a worn vacuum seal", "an expired license key", "a loose fibre connector",
    "a full scratch disk", "a failed cooling pump", "a corrupted firmware update", "a misaligned mirror",
)  # fmt: skip
_BUCKETS = ("cold-archive", "lab-raw", "shared-scratch", "results-prod", "deep-store", "team-share")
_UNITS = ("mV", "kPa", "nm", "Hz")


def _lab(rng: random.Random) -> list[dict[str, Any]]:
    """The ``lab`` question set: six seeded facts and six learned ones (see the module docstring)."""
    instruments = rng.sample(_INSTRUMENTS, 6)
    projects = rng.sample(_PROJECTS, 6)
    facts: list[dict[str, Any]] = []
    for inst in instruments[:3]:
        value = f"{rng.uniform(1, 9):.2f} {rng.choice(_UNITS)}"
        facts.append(
            {
                "group": "seeded",
                "question": f"What is the calibration constant of the {inst}?",
                "answer": value,
                "sentence": f"The calibration constant of the {inst} is {value}.",
                "note": f"/lab/instruments/{inst}.md",
                "title": f"The {inst}",
                "aside": f"The {inst} is booked through the facility calendar. Report faults to the technician.",
            }
        )
    for person, proj in zip(rng.sample(_PEOPLE, 3), projects[:3], strict=True):
        facts.append(
            {
                "group": "seeded",
                "question": f"Who is the principal investigator of project {proj}?",
                "answer": person,
                "sentence": f"The principal investigator of project {proj} is {person}.",
                "note": f"/lab/projects/{proj.lower()}.md",
                "title": f"Project {proj}",
                "aside": f"Project {proj} meets every second Tuesday. Its plan is reviewed each quarter.",
            }
        )
    hours = rng.sample(range(1, 14), 6)
    for inst, cause, hour in zip(instruments[3:], rng.sample(_CAUSES, 3), hours[:3], strict=True):
        facts.append(
            {
                "group": "learned",
                "question": f"What caused the {inst} outage?",
                "answer": cause,
                "sentence": f"The {inst} outage was caused by {cause}.",
                "report": f"The {inst} is down again and every run on it is stuck. Can someone look?",
                "hour": hour,
            }
        )
    for proj, bucket, hour in zip(projects[3:], rng.sample(_BUCKETS, 3), hours[3:], strict=True):
        facts.append(
            {
                "group": "learned",
                "question": f"Where were the {proj} results moved?",
                "answer": f"the {bucket} bucket",
                "sentence": f"The {proj} results were moved to the {bucket} bucket.",
                "report": f"Project {proj}: its results folder is empty since this morning. Where did they go?",
                "hour": hour,
            }
        )
    return facts


#: Question sets by name: each draws its facts from the truth's random generator.
QUESTION_SETS: Mapping[str, Any] = {"lab": _lab}


# -- scoring (SQuAD v1.1's evaluation) -------------------------------------------------------------------------
_ARTICLES = re.compile(r"\b(a|an|the)\b")
_CITATION = re.compile(r"\[[^\]]*\]")
_PUNCTUATION = frozenset(string.punctuation)


def normalize_answer(text: str) -> str:
    """Lower case, punctuation, articles and extra whitespace removed (SQuAD's ``normalize_answer``)."""
    text = "".join(ch for ch in text.lower() if ch not in _PUNCTUATION)
    return " ".join(_ARTICLES.sub(" ", text).split())


def exact_match(prediction: str, gold: str) -> float:
    return float(normalize_answer(prediction) == normalize_answer(gold))


def token_f1(prediction: str, gold: str) -> float:
    """F1 of the normalised tokens of ``prediction`` against ``gold`` (SQuAD's ``f1_score``)."""
    pred, truth = normalize_answer(prediction).split(), normalize_answer(gold).split()
    common = Counter(pred) & Counter(truth)
    same = sum(common.values())
    if same == 0:
        return 0.0
    precision, recall = same / len(pred), same / len(truth)
    return 2 * precision * recall / (precision + recall)


def short_answer_of(reply: str) -> str:
    """The short answer of a chat reply: its first non-empty line, citations removed (prompt chat.answer v2)."""
    for line in reply.splitlines():
        line = _CITATION.sub("", line).strip()
        if line:
            return line
    return ""


@register
class QaScenario(Scenario):
    """Questions with gold answers over memory and the ledger; half of them answerable only after the loops
    turn resolved conversations into knowledge; scores are SQuAD exact match and token F1."""

    name: ClassVar[str] = "qa"
    summary: ClassVar[str] = (
        "Questions with gold answers; half are answerable from seeded notes, half only once the loops turn "
        "resolved conversations into memory notes (exact match and token F1 of the chat answers)."
    )
    score_names: ClassVar[Mapping[str, str]] = {
        "exact_match": "answers whose short answer equals the gold one, normalised / questions (higher is better)",
        "f1": "mean token F1 of the short answers against the gold ones (higher is better)",
        "f1_seeded": "mean token F1 on the questions answerable from the start (higher is better)",
        "f1_learned": "mean token F1 on the questions answerable only from learned knowledge (higher is better)",
    }
    options: ClassVar[Mapping[str, str]] = {
        "questions": f"question set: {', '.join(QUESTION_SETS)} (default lab)"
    }
    step: ClassVar[float] = 300.0
    min_interval: ClassVar[float | None] = 600.0
    intervals: ClassVar[Mapping[str, float]] = {"reflection": 1200.0, "learning": 1200.0}
    question_every: ClassVar[float] = 600.0  # simulated seconds between questions
    resolve_after: ClassVar[float] = 2700.0  # seconds from a problem's report to its resolution

    def __init__(self, seed: int, **options: Any) -> None:
        questions = str(options.get("questions", "lab"))
        if questions not in QUESTION_SETS:
            raise ScenarioError(
                f"unknown question set {questions!r} for scenario qa; use one of {', '.join(QUESTION_SETS)}"
            )
        self.question_set = questions
        super().__init__(seed, **options)
        self._t = 0.0  # simulated seconds planned so far
        self._events = self._schedule()

    def draw(self, rng: random.Random) -> dict[str, Any]:
        facts = QUESTION_SETS[self.question_set](rng)
        for i, fact in enumerate(facts):
            fact["id"] = f"q{i + 1:02d}"
        return {"question_set": self.question_set, "facts": facts}

    @functools.cached_property
    def _by_question(self) -> dict[str, dict[str, Any]]:
        return {f["question"]: f for f in self.truth["facts"]}

    def _schedule(self) -> list[tuple[float, str, dict[str, Any]]]:
        """Reports and resolutions at their hidden hours (the questions are drawn step by step)."""
        events: list[tuple[float, str, dict[str, Any]]] = []
        for fact in self.truth["facts"]:
            if fact["group"] == "learned":
                at = fact["hour"] * 3600.0
                events.append((at, "report", fact))
                events.append((at + self.resolve_after, "resolve", fact))
        events.sort(key=lambda e: (e[0], e[1], e[2]["id"]))
        return events

    # -- setup and traffic -----------------------------------------------------------------------------------
    def setup(self, ws: Workspace) -> None:
        for user, role in ((LEAD, "admin"), (ASKER, "researcher"), (TECHNICIAN, "researcher")):
            if ws.auth.role_of(user) is None:
                ws.auth.register(user, PASSWORD, role=role, by="system")
        for fact in self.truth["facts"]:
            if fact["group"] == "seeded":
                ws.memory.write(
                    fact["note"],
                    f"# {fact['title']}\n\n{fact['sentence']}\n\n{fact['aside']}\n",
                    actor="system",
                    tags=("lab",),
                )
        self._conversations: dict[str, str] = {}

    def plan(self, step: float) -> list[tuple[float, Action]]:
        start, end = self._t, self._t + step
        self._t = end
        actions: list[tuple[float, Action]] = []
        for at, what, fact in self._events:
            if start <= at < end:
                act = self._report if what == "report" else self._resolve
                actions.append((at - start, functools.partial(act, fact)))
        # One question every ``question_every`` seconds, on the boundaries that fall in this step.
        first = -(-start // self.question_every) * self.question_every
        at = first
        while at < end:
            fact = self.rng.choice(self.truth["facts"])
            actions.append((at - start, functools.partial(self._ask, fact["question"])))
            at += self.question_every
        actions.sort(key=lambda a: a[0])
        return actions

    def _ask(self, question: str) -> None:
        assert self.ws is not None
        self.ws.chat.send(ASKER, question)

    def _report(self, fact: Mapping[str, Any]) -> None:
        assert self.ws is not None
        self._conversations[fact["id"]] = self.ws.chat.send(TECHNICIAN, fact["report"]).conversation

    def _resolve(self, fact: Mapping[str, Any]) -> None:
        assert self.ws is not None
        self.ws.chat.resolve(self._conversations[fact["id"]], user=TECHNICIAN, summary=fact["sentence"])

    # -- scores ------------------------------------------------------------------------------------------------
    def answers(self, ws: Workspace, since: float, until: float) -> list[dict[str, Any]]:
        """The questions asked in [since, until) with their replies and scores, in order."""
        rows = (
            ws.ledger.reader()
            .execute(
                "SELECT q.text, a.text FROM chat_messages q JOIN conversations c ON c.id = q.conversation "
                "JOIN chat_messages a ON a.parent_id = q.id AND a.kind = 'responded' "
                "WHERE q.kind = 'received' AND c.\"user\" = ? AND q.ts >= make_timestamptz(?::BIGINT) "
                "AND q.ts < make_timestamptz(?::BIGINT) ORDER BY q.ts, q.id",
                [ASKER, round(since * 1e6), round(until * 1e6)],
            )
            .fetchall()
        )
        out = []
        for question, reply in rows:
            fact = self._by_question.get(question)
            if fact is None:
                continue
            short = short_answer_of(reply)
            out.append(
                {
                    "id": fact["id"],
                    "group": fact["group"],
                    "question": question,
                    "gold": fact["answer"],
                    "answer": short,
                    "exact_match": exact_match(short, fact["answer"]),
                    "f1": token_f1(short, fact["answer"]),
                }
            )
        return out

    def measure(self, ws: Workspace, since: float, until: float) -> dict[str, float | None]:
        answers = self.answers(ws, since, until)

        def mean(key: str, group: str | None = None) -> float | None:
            values = [a[key] for a in answers if group is None or a["group"] == group]
            return round(sum(values) / len(values), 6) if values else None

        return {
            "exact_match": mean("exact_match"),
            "f1": mean("f1"),
            "f1_seeded": mean("f1", "seeded"),
            "f1_learned": mean("f1", "learned"),
        }

    def counts(self, ws: Workspace, since: float, until: float) -> dict[str, int]:
        answers = self.answers(ws, since, until)
        row = (
            ws.ledger.reader()
            .execute(
                "SELECT count(*) FILTER (WHERE topic = 'chat.conversation.resolved'), "
                "count(*) FILTER (WHERE topic = 'reflection.insight' AND (payload->>'$.kind') = 'resolution'), "
                "count(*) FILTER (WHERE topic = 'memory.item.created' AND (payload->>'$.path') LIKE '/knowledge/%'), "
                "count(*) FILTER (WHERE topic = 'llm.completed' AND (payload->>'$.prompt') = 'chat.answer'), "
                "count(*) FILTER (WHERE topic = 'llm.failed') "
                "FROM events WHERE ts >= make_timestamptz(?::BIGINT) AND ts < make_timestamptz(?::BIGINT)",
                [round(since * 1e6), round(until * 1e6)],
            )
            .fetchone()
        )
        r = row or (0, 0, 0, 0, 0)
        return {
            "questions": len(answers),
            "exact": int(sum(a["exact_match"] for a in answers)),
            "resolved_conversations": int(r[0]),
            "resolution_insights": int(r[1]),
            "knowledge_notes": int(r[2]),
            "model_answers": int(r[3]),
            "model_failures": int(r[4]),
        }
