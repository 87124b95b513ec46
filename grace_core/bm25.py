"""Okapi BM25, the workspace's one ranking function (memory search, chat retrieval, chat search).

For a query ``q`` (each distinct term counted once) and a document ``d`` of ``|d|`` terms::

    score(d, q) = sum over t in q and d of  idf(t) * tf(t, d) * (k1 + 1) / (tf(t, d) + norm(d))
    norm(d)     = k1 * (1 - b + b * |d| / avgdl)          (k1 when avgdl is 0)
    idf(t)      = ln((N - df(t) + 0.5) / (df(t) + 0.5) + 1)  (never negative)

Terms are summed in sorted order, so the same inputs give the same score to the last bit in every process.
Memory's index evaluates the same formula in DuckDB (:func:`sql_term_score`) over the fts extension's
(stemmed) terms; :class:`BM25` evaluates it in Python over documents split by :func:`tokenize` (plain words).
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

__all__ = ["BM25", "Params", "idf", "length_norm", "score", "sql_term_score", "tokenize"]


@dataclass(frozen=True)
class Params:
    """BM25's two settings: ``k1`` (how soon repeats of a term stop adding) and ``b`` (length normalisation).

    The defaults are the usual ones (and the fts extension's ``match_bm25``).
    """

    k1: float = 1.2
    b: float = 0.75


def idf(n: int, df: int) -> float:
    """The inverse document frequency of a term found in ``df`` of ``n`` documents."""
    return math.log((n - df + 0.5) / (df + 0.5) + 1)


def length_norm(length: int, avgdl: float, params: Params) -> float:
    """``norm(d)`` of a document of ``length`` terms, where documents average ``avgdl`` terms."""
    return params.k1 * (1 - params.b + params.b * length / avgdl) if avgdl > 0 else params.k1


def _term(weight: float, tf: int, norm: float, k1: float) -> float:
    return weight * tf * (k1 + 1) / (tf + norm)


def score(tf: Mapping[str, int], norm: float, idfs: Mapping[str, float], params: Params) -> float:
    """The score of a document with term counts ``tf`` and ``norm`` for query terms with ``idfs``."""
    return sum(_term(idfs[t], tf[t], norm, params.k1) for t in sorted(idfs) if t in tf)


def sql_term_score(*, idf: str, tf: str, length: str, avgdl: float, params: Params) -> str:
    """One term's share of the score as a DuckDB expression over the given columns (sum it per document)."""
    k1, b = params.k1, params.b
    norm = f"{k1} * (1 - {b} + {b} * {length} / {avgdl!r}::DOUBLE)" if avgdl > 0 else f"{k1}"
    return f"{idf} * {tf} * {k1 + 1} / ({tf} + {norm})"


class BM25:
    """BM25 over a list of tokenised documents; ``top`` breaks ties by document order."""

    def __init__(self, docs: Sequence[Sequence[str]], *, params: Params) -> None:
        self.params = params
        n = len(docs)
        lengths = [len(d) for d in docs]
        avgdl = sum(lengths) / n if n else 0.0
        self._norms = [length_norm(dl, avgdl, params) for dl in lengths]
        # Postings: a query touches only the documents that hold one of its terms.
        self._postings: dict[str, list[tuple[int, int]]] = {}
        for i, doc in enumerate(docs):
            for term, count in Counter(doc).items():
                self._postings.setdefault(term, []).append((i, count))
        self.idf = {t: idf(n, len(p)) for t, p in self._postings.items()}

    def top(self, query: Sequence[str], k: int) -> list[tuple[int, float]]:
        """The ``k`` best (document index, score) pairs with a positive score, best first."""
        totals: dict[int, float] = {}
        k1 = self.params.k1
        # Term by term in sorted order: each document's sum adds up exactly as score() adds it.
        for term in sorted(set(query)):
            postings = self._postings.get(term)
            if postings is None:
                continue
            weight = self.idf[term]
            for i, count in postings:
                totals[i] = totals.get(i, 0) + _term(weight, count, self._norms[i], k1)
        ranked = sorted(((i, s) for i, s in totals.items() if s > 0), key=lambda p: (-p[1], p[0]))
        return ranked[:k]


_WORD = re.compile(r"[a-z0-9]+")
# fmt: off
_STOP = frozenset((
    "a", "an", "and", "are", "as", "at", "be", "by", "do", "does", "for", "from", "has", "have", "how", "i",
    "in", "is", "it", "its", "me", "my", "of", "on", "or", "our", "so", "that", "the", "their", "them", "there",
    "this", "to", "was", "we", "were", "what", "when", "where", "which", "who", "why", "will", "with", "you",
    "your",
))
# fmt: on


def tokenize(text: str) -> list[str]:
    """Lower-case words and numbers, without the commonest English function words."""
    return [t for t in _WORD.findall(text.lower()) if t not in _STOP]
