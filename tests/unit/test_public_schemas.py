"""API schemas that repeat a stored or retrieved record's fields are filled from it, never copied by hand."""

from __future__ import annotations

import dataclasses

from stratus.api.routes_keys import KeyInfo
from stratus.chat.citations import CITED_FIELDS, citations_for
from stratus.chat.models import Citation
from stratus.chat.prompts import ContextChunk
from stratus.retrieval.search import SearchHit
from stratus.stores.keys import KeyRecord


def test_a_citation_carries_every_location_field_of_its_hit() -> None:
    # given a retrieved spreadsheet chunk numbered [2] in the prompt, and one numbered [1]
    hit = SearchHit(
        chunk_id="c2",
        doc_id="d",
        source="sales.xlsx",
        title="Sales",
        section="Q3",
        page=None,
        sheet="EMEA",
        row_start=10,
        row_end=14,
        text="revenue rose",
        score=0.9,
        metadata={"team": "x"},
    )
    other = SearchHit(chunk_id="c1", doc_id="e", source="a.md", text="t", score=0.1)
    chunks = [ContextChunk(1, other, "t"), ContextChunk(2, hit, "revenue rose")]

    # when the answer cites [2] and an unknown [7]
    citations = citations_for([2, 7], chunks)

    # then [2] names the hit's every location field, and nothing of its text, score or metadata
    assert [c.model_dump() for c in citations] == [
        {
            "n": 2,
            "chunk_id": "c2",
            "doc_id": "d",
            "source": "sales.xlsx",
            "title": "Sales",
            "section": "Q3",
            "page": None,
            "sheet": "EMEA",
            "row_start": 10,
            "row_end": 14,
        }
    ]
    assert set(SearchHit.model_fields) >= CITED_FIELDS == set(Citation.model_fields) - {"n"}


def test_a_listed_key_shows_every_stored_field_but_the_hash() -> None:
    # given a stored key record
    record = KeyRecord(
        key_hash="h" * 64,
        key_id="k" * 12,
        name="ci",
        collections=["docs"],
        roles=["read"],
        created_at=1.5,
        revoked_at=2.5,
        rate_limit_per_s=3.0,
        rate_limit_burst=4,
        gateway_key_id="gw",
    )

    # when it is shown as the API lists keys
    public = record.to_public()

    # then every field but the hash is there, and they are exactly the API schema's fields
    stored = {f.name for f in dataclasses.fields(KeyRecord)}
    assert set(public) == stored - {"key_hash"} == set(KeyInfo.model_fields)
    assert KeyInfo(**public).model_dump() == public
