"""The ONNX cross-encoder reranker, with a tiny graph and tokenizer built here."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from stratus.retrieval.rerank import CrossEncoder
from stratus.retrieval.search import FusionConfig, SearchRequest, search
from stratus.stores.vectors import ChunkStore

VOCAB = [
    "[PAD]",
    "[UNK]",
    "[CLS]",
    "[SEP]",
    "cats",
    "dogs",
    "sleep",
    "bark",
    "fish",
    "swim",
    "the",
    "all",
    "day",
]
# The toy model's relevance: how often the passage (segment 1) says "fish" or "swim".
WEIGHTS = {"fish": 3.0, "swim": 1.0}


def build_cross_encoder(folder: Path) -> Path:
    """model.onnx: logit = sum of WEIGHTS over passage tokens; tokenizer.json: word-level, BERT pairs."""
    import onnx
    from onnx import TensorProto, helper
    from tokenizers import Tokenizer, models, pre_tokenizers, processors

    folder.mkdir(parents=True, exist_ok=True)
    vocab = {word: i for i, word in enumerate(VOCAB)}
    tokenizer = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", vocab["[CLS]"]), ("[SEP]", vocab["[SEP]"])],
    )
    tokenizer.save(str(folder / "tokenizer.json"))

    table = np.zeros((len(VOCAB), 1), dtype=np.float32)
    for word, weight in WEIGHTS.items():
        table[vocab[word], 0] = weight
    nodes = [
        helper.make_node("Gather", ["table", "input_ids"], ["per_token"]),  # [B, T, 1]
        helper.make_node("Squeeze", ["per_token", "last_axis"], ["token_scores"]),  # [B, T]
        helper.make_node("Cast", ["attention_mask"], ["mask_f"], to=TensorProto.FLOAT),
        helper.make_node("Cast", ["token_type_ids"], ["segment_f"], to=TensorProto.FLOAT),
        helper.make_node("Mul", ["token_scores", "mask_f"], ["masked"]),
        helper.make_node("Mul", ["masked", "segment_f"], ["passage_scores"]),
        helper.make_node("ReduceSum", ["passage_scores", "axis_one"], ["logits"], keepdims=1),  # [B, 1]
    ]
    graph = helper.make_graph(
        nodes,
        "toy-cross-encoder",
        [
            helper.make_tensor_value_info(name, TensorProto.INT64, ["batch", "tokens"])
            for name in ("input_ids", "attention_mask", "token_type_ids")
        ],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 1])],
        initializer=[
            helper.make_tensor("table", TensorProto.FLOAT, table.shape, table.flatten()),
            helper.make_tensor("last_axis", TensorProto.INT64, [1], [2]),
            helper.make_tensor("axis_one", TensorProto.INT64, [1], [1]),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(folder / "model.onnx"))
    return folder


@pytest.fixture(scope="module")
def reranker_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_cross_encoder(tmp_path_factory.mktemp("reranker"))


def test_the_cross_encoder_scores_pairs_with_the_onnx_graph(reranker_dir: Path) -> None:
    # given the toy cross-encoder
    model = CrossEncoder(reranker_dir)

    # when it scores passages for a query that itself says "fish" (segment 0: must not count)
    scores = model.score("fish fish", ["cats sleep", "fish swim", "fish fish fish", "unknown words here"])

    # then each score is the weighted count of passage tokens only, padding ignored
    assert scores.tolist() == pytest.approx([0.0, 4.0, 9.0, 0.0])


def test_the_cross_encoder_truncates_only_the_passage(reranker_dir: Path) -> None:
    # given a short token budget
    model = CrossEncoder(reranker_dir, max_tokens=8)

    # when a long passage is scored
    # then it is cut to fit: [CLS] q [SEP] + 4 passage tokens + [SEP]
    assert model.score("cats", ["fish " * 50])[0] == pytest.approx(3.0 * 4)


def test_a_folder_without_the_model_is_refused(tmp_path: Path) -> None:
    # given an empty folder
    # when a reranker is made from it
    # then it says which file is missing
    with pytest.raises(FileNotFoundError, match=r"model\.onnx"):
        CrossEncoder(tmp_path)


def test_search_reranks_the_fused_candidates(reranker_dir: Path, tmp_path: Path) -> None:
    # given a collection where the fish document is ranked last by keyword search for "cats"
    import pyarrow as pa
    from test_search import BagOfWords, batch_for

    from stratus.stores.schema import chunk_rows

    encoder = BagOfWords()
    docs: list[Any] = [
        ("a.md", "", "cats sleep all day", {}),
        ("b.md", "", "cats cats bark", {}),
        ("c.md", "", "cats fish swim", {}),
    ]
    rows = pa.concat_tables(
        [
            chunk_rows(b, encoder.embed_documents([c.text for c in b.chunks]), {})
            for b in (batch_for(*d) for d in docs)
        ]
    )
    store = ChunkStore(str(tmp_path / "db"))
    store.write("papers", rows, {}, [], rows.schema.field("vector").type.list_size)

    # when searching with rerank
    request = SearchRequest(query="cats", mode="keyword", top_k=3, rerank=True)
    response = search(
        store, encoder, "papers", request, FusionConfig(rerank_candidates=3), CrossEncoder(reranker_dir)
    )

    # then the cross-encoder's order wins and its scores are reported
    assert response.reranked
    assert response.hits[0].source == "c.md"
    assert response.hits[0].rerank_score == pytest.approx(4.0)
    assert "rerank" in response.timings_ms
