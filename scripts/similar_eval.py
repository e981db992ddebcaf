#!/usr/bin/env python3
"""How well "more like this" finds a document's co-relevant documents, per side and fused.

A BEIR claim judged relevant to several documents makes them a proxy of "similar": for every
ordered pair (a, b) of documents relevant to one claim, `similar_documents(a)` should rank b in
its top 10. Prints the share of pairs found and MRR@10 for the default fusion, the vector side
alone and the keyword side alone, over the index `stratus eval` built (its cache folder).

    .venv/bin/stratus eval ../shared/eval/scifact --split train        # builds .cache/eval/<key>
    .venv/bin/python scripts/similar_eval.py .cache/eval/<key>/lancedb ../shared/eval/scifact
"""

from __future__ import annotations

import argparse
import csv
import itertools
import statistics
from collections import defaultdict
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    """Print found@10 and MRR@10 per fusion."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("index", type=Path, help="the lancedb folder of a `stratus eval` index")
    parser.add_argument("dataset", type=Path, help="the BEIR folder (its qrels/<split>.tsv)")
    parser.add_argument("--split", default="train")
    args = parser.parse_args(argv)

    from stratus.retrieval.search import FusionConfig
    from stratus.retrieval.similar import similar_documents
    from stratus.settings import get_settings
    from stratus.stores.vectors import ChunkStore
    from stratus_tools.evaluation import COLLECTION

    store = ChunkStore(str(args.index), memory_max_rows=get_settings().search_memory_max_rows)
    relevant: dict[str, set[str]] = defaultdict(set)
    with (args.dataset / "qrels" / f"{args.split}.tsv").open() as lines:
        for row in csv.DictReader(lines, delimiter="\t"):
            if int(row["score"]) > 0:
                relevant[row["query-id"]].add(row["corpus-id"])
    pairs = [p for docs in relevant.values() for p in itertools.permutations(sorted(docs), 2)]
    print(
        f"{sum(len(d) > 1 for d in relevant.values())} claims with 2+ documents: {len(pairs)} ordered pairs"
    )
    sides = {
        "fused (default)": FusionConfig(),
        "vector only": FusionConfig(keyword_weight=0.0),
        "keyword only": FusionConfig(vector_weight=0.0),
    }
    for name, fusion in sides.items():
        reciprocal = []
        for a, b in pairs:
            ranked = [hit.doc_id for hit in similar_documents(store, COLLECTION, a, 10, fusion).hits]
            reciprocal.append(1 / (ranked.index(b) + 1) if b in ranked else 0.0)
        found = sum(r > 0 for r in reciprocal) / len(pairs)
        print(f"{name:16s} found@10 {found:.3f}  MRR@10 {statistics.mean(reciprocal):.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
