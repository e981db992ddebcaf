"""`stratus eval`: the metrics on a hand-made run, and the whole tool on a tiny BEIR folder."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from stratus_tools.evaluation import (
    docs_from_hits,
    evaluate_run,
    main,
    mrr_at,
    ndcg_at,
    read_qrels,
    recall_at,
)

QRELS = {"q1": {"d1": 2, "d3": 1}, "q2": {"d9": 1}}
RUN = {"q1": [("d2", 3.0), ("d1", 2.0), ("d3", 1.0)], "q2": [("d5", 1.0), ("d6", 0.5)]}


def test_ndcg_uses_graded_gains_and_log2_discounts() -> None:
    # given q1: the grade-2 document at rank 2, the grade-1 document at rank 3
    ranked = [d for d, _ in RUN["q1"]]

    # when nDCG@10 is computed
    value = ndcg_at(ranked, QRELS["q1"], 10)

    # then it is (2/log2(3) + 1/log2(4)) / (2/log2(2) + 1/log2(3)) = 1.76186 / 2.63093
    assert value == pytest.approx((2 / math.log2(3) + 1 / 2) / (2 + 1 / math.log2(3)))
    assert value == pytest.approx(0.669672, abs=1e-6)


def test_recall_and_mrr_by_hand() -> None:
    # given q1's ranking d2, d1, d3
    ranked = [d for d, _ in RUN["q1"]]

    # then recall counts relevant documents within k, and MRR is 1 / rank of the first relevant one
    assert recall_at(ranked, QRELS["q1"], 2) == 0.5
    assert recall_at(ranked, QRELS["q1"], 10) == 1.0
    assert mrr_at(ranked, QRELS["q1"], 10) == 0.5
    assert mrr_at(ranked, QRELS["q1"], 1) == 0.0


def test_means_over_queries_count_misses_as_zero() -> None:
    # given q1 above and q2 whose run holds nothing relevant, and q3 judged but absent from the run
    qrels = {**QRELS, "q3": {"d7": 1}}

    # when the run is evaluated
    metrics = evaluate_run(qrels, RUN)

    # then each metric is the mean over the three judged queries
    assert metrics == {
        "ndcg@10": round(0.669672 / 3, 4),
        "recall@10": round(1 / 3, 4),
        "recall@100": round(1 / 3, 4),
        "mrr@10": round(0.5 / 3, 4),
    }


def test_a_document_scores_its_best_chunk() -> None:
    # given chunk hits, best first, two of them from d1
    hits = [("d1", 0.9), ("d2", 0.8), ("d1", 0.7), ("d3", 0.6)]

    # when aggregated to documents
    # then d1 keeps its first (best) score and the list stops at the limit
    assert docs_from_hits(hits, 10) == [("d1", 0.9), ("d2", 0.8), ("d3", 0.6)]
    assert docs_from_hits(hits, 2) == [("d1", 0.9), ("d2", 0.8)]


def test_qrels_files_skip_their_header(tmp_path: Path) -> None:
    # given a BEIR qrels file with a header
    path = tmp_path / "test.tsv"
    path.write_text("query-id\tcorpus-id\tscore\nq1\td1\t1\nq1\td2\t0\nq2\td3\t2\n")

    # when read
    # then every judgement is there and the header is not
    assert read_qrels(path) == {"q1": {"d1": 1, "d2": 0}, "q2": {"d3": 2}}


CORPUS = [
    ("sun", "The Sun", "The sun is a star at the centre of the solar system; it gives light and heat."),
    ("moon", "The Moon", "The moon orbits the earth and causes the ocean tides."),
    ("bread", "Baking bread", "Bread is baked from flour, water, yeast and salt in a hot oven."),
    ("python", "Python", "Python is a programming language with a garbage collector."),
    ("cats", "Cats", "Cats are small furry pets that purr and sleep most of the day."),
    ("volcano", "Volcanoes", "A volcano erupts molten lava, ash and gas from inside the earth."),
]
QUERIES = [
    ("1", "what causes ocean tides", "moon"),
    ("2", "how do you bake bread with yeast", "bread"),
    ("3", "which star is at the centre of the solar system", "sun"),
    ("4", "furry pets that purr", "cats"),
    ("5", "lava erupting from a mountain", "volcano"),
    ("6", "not judged in this split", None),
]


@pytest.fixture
def beir(tmp_path: Path) -> Path:
    folder = tmp_path / "tiny"
    (folder / "qrels").mkdir(parents=True)
    (folder / "corpus.jsonl").write_text(
        "".join(json.dumps({"_id": i, "title": t, "text": x}) + "\n" for i, t, x in CORPUS)
    )
    (folder / "queries.jsonl").write_text(
        "".join(json.dumps({"_id": q, "text": t}) + "\n" for q, t, _ in QUERIES)
    )
    (folder / "qrels" / "test.tsv").write_text(
        "query-id\tcorpus-id\tscore\n" + "".join(f"{q}\t{d}\t1\n" for q, _, d in QUERIES if d)
    )
    return folder


def test_the_tool_indexes_a_beir_folder_and_scores_every_mode(
    beir: Path, tmp_path: Path, model_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # given a tiny BEIR folder whose judged queries each have one obvious answer
    cache = tmp_path / "cache"
    report = tmp_path / "out" / "eval.json"
    run_file = tmp_path / "out" / "run.txt"
    args = [str(beir), "--cache-dir", str(cache), "--model-dir", str(model_dir), "--json", str(report)]

    # when the tool runs every mode with a run file
    assert main([*args, "--run-file", str(run_file)]) == 0

    # then every mode finds them, the JSON has the four metrics per mode, and the table is printed
    data = json.loads(report.read_text())
    assert data["queries"] == 5
    assert data["index"]["documents"] == 6
    for mode in ("keyword", "vector", "hybrid"):
        assert data["modes"][mode]["ndcg@10"] > 0.8, mode
        assert set(data["modes"][mode]) >= {"ndcg@10", "recall@10", "recall@100", "mrr@10"}
    assert data["modes"]["hybrid"]["recall@100"] == 1.0
    assert "hybrid" in capsys.readouterr().out
    # and each mode is scored on both halves of the judged queries too
    assert set(data["modes"]["hybrid"]["halves"]) == {"odd", "even"}
    assert data["modes"]["hybrid"]["halves"]["odd"]["ndcg@10"] > 0.8

    # and the TREC run files rank every indexed document per judged query, in `qid Q0 doc rank score tag` form
    lines = (tmp_path / "out" / "run.hybrid.txt").read_text().splitlines()
    assert len(lines) == 5 * 6
    _qid, q0, _doc, rank, score, tag = lines[0].split()
    assert (q0, rank, tag) == ("Q0", "1", "stratus-hybrid")
    assert float(score) > 0

    # when it runs again with --limit on one mode
    assert main([*args, "--mode", "keyword", "--limit", "2"]) == 0

    # then the built index was reused (one cached index) and only two queries ran
    assert len([p for p in cache.iterdir() if p.is_dir()]) == 1
    assert json.loads(report.read_text())["queries"] == 2
    assert "reusing index" in capsys.readouterr().err


def test_a_folder_that_is_not_beir_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # given an empty folder
    # when evaluated
    # then the tool says what is missing and exits 2
    assert main([str(tmp_path)]) == 2
    assert "corpus.jsonl is missing" in capsys.readouterr().err


def test_halves_split_the_judged_queries_by_odd_and_even_ids() -> None:
    from stratus_tools.evaluation import halves

    # given judged queries with numeric ids, and one id that is no number (third in order)
    qrels = {"1": {"a": 1}, "2": {"b": 1}, "x": {"c": 1}, "7": {"d": 1}, "10": {"e": 1}}
    # when they are split
    split = halves(qrels)
    # then odd ids go to one half and even ids to the other, the odd one out by its position (2: even)
    assert sorted(split["odd"]) == ["1", "7"]
    assert sorted(split["even"]) == ["10", "2", "x"]
    assert len(split["odd"]) + len(split["even"]) == len(qrels)
