"""BM25: one ranking function, the same in Python (responder, chat search, memory's delta) and in DuckDB."""

from __future__ import annotations

import duckdb
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from grace_core import bm25
from grace_core.bm25 import BM25, Params, tokenize

WORDS = st.sampled_from(["amber", "basalt", "cobalt", "dune", "ember", "fjord", "garnet"])
DOCS = st.lists(st.lists(WORDS, max_size=12), max_size=12)
PARAMS = st.builds(Params, k1=st.sampled_from([1.2, 1.5, 2.0]), b=st.sampled_from([0.0, 0.75, 1.0]))


def test_bm25_prefers_rare_terms_and_is_stable() -> None:
    docs = [tokenize(t) for t in ["duckdb stores data", "data data data", "weather data classifier"]]
    index = BM25(docs, params=Params(k1=1.5))
    assert index.top(tokenize("duckdb data"), 3)[0][0] == 0
    assert index.top(tokenize("classifier"), 3) == index.top(tokenize("classifier"), 3)
    assert [i for i, _ in index.top(tokenize("data"), 3)] == [1, 0, 2]
    assert index.top(tokenize("nothing here"), 3) == []


def test_tokenize_keeps_words_and_numbers_without_function_words() -> None:
    assert tokenize("What is the E42 error of DuckDB?") == ["e42", "error", "duckdb"]


@settings(max_examples=200, deadline=None)
@given(docs=DOCS, query=st.lists(WORDS, min_size=1, max_size=6), params=PARAMS)
def test_the_index_ranks_exactly_as_the_formula_scores_each_document(
    docs: list[list[str]], query: list[str], params: Params
) -> None:
    index = BM25(docs, params=params)
    n = len(docs)
    avgdl = sum(len(d) for d in docs) / n if n else 0.0
    df = {t: sum(1 for d in docs if t in d) for t in set(query)}
    idfs = {t: bm25.idf(n, f) for t, f in df.items() if f}
    expected = []
    for i, doc in enumerate(docs):
        tf = {t: doc.count(t) for t in set(doc)}
        s = bm25.score(tf, bm25.length_norm(len(doc), avgdl, params), idfs, params)
        if s > 0:
            expected.append((i, s))
    expected.sort(key=lambda p: (-p[1], p[0]))
    assert index.top(query, n + 1) == expected  # to the last bit, not approximately
    # Neither the order nor repeats of the query's words change a score (they are summed in sorted order).
    assert index.top([*reversed(query), *query], n + 1) == expected


@settings(max_examples=50, deadline=None)
@given(
    tf=st.integers(1, 50),
    length=st.integers(1, 500),
    avgdl=st.sampled_from([0.0, 1.0, 7.5, 123.25]),
    weight=st.floats(0.01, 10),
    params=PARAMS,
)
def test_duckdb_evaluates_the_same_term_score(
    tf: int, length: int, avgdl: float, weight: float, params: Params
) -> None:
    expr = bm25.sql_term_score(idf="w", tf="tf", length="len", avgdl=avgdl, params=params)
    con = duckdb.connect()
    try:
        row = con.execute(f"SELECT {expr} FROM (SELECT ?::DOUBLE AS w, ?::INTEGER AS tf, ?::INTEGER AS len)",
                          [weight, tf, length]).fetchone()  # fmt: skip
    finally:
        con.close()
    assert row is not None
    python = bm25.score({"t": tf}, bm25.length_norm(length, avgdl, params), {"t": weight}, params)
    assert row[0] == pytest.approx(python, rel=1e-12)
