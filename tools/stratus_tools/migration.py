"""Moving chunk tables of the first layout into one table per collection (`stratus migrate-tables`).

The first layout named a collection's table ``chunks_<collection with '-' as '_'>`` and stored no
collection in the rows, so ``a-b`` and ``a_b`` wrote into one table. A row's collection is recovered
from its document id, which is ``make_doc_id(collection, source)``: each candidate name that the old
rule maps to the table (every '_' may have been a '-', plus names the operator gives) is tried against
the row's source. Rows are copied in document batches into ``chunks-<collection>`` (new chunk ids only:
a document already re-indexed under the new layout keeps its newer rows), then deleted from the old
table, which is dropped once empty. A row of no candidate collection stays where it is and is reported.
Running it again finds nothing left to do.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from stratus.models import COLLECTION_PATTERN, make_doc_id
from stratus.stores.vectors import LEGACY_PREFIX, scoped, sql_string

if TYPE_CHECKING:
    from stratus.stores.vectors import ChunkStore

# 2**8 spellings of a table stem with 8 underscores; beyond that only the two plain spellings and
# the names given with --collection are tried (a doc id check costs one sha256 per candidate).
MAX_SPELLING_UNDERSCORES = 8
DOCS_PER_BATCH = 200


@dataclass
class TableMigration:
    """What happened to one table of the first layout."""

    table: str
    rows: int = 0
    moved: dict[str, int] = field(default_factory=dict)
    kept_newer: int = 0
    unresolved: int = 0
    dropped: bool = False

    def to_public(self) -> dict[str, Any]:
        """A JSON-ready summary."""
        return {
            "table": self.table,
            "rows": self.rows,
            "moved": dict(sorted(self.moved.items())),
            "kept_newer": self.kept_newer,
            "unresolved": self.unresolved,
            "dropped": self.dropped,
        }


def legacy_stem(collection: str) -> str:
    """The first layout's table stem of a collection (many names share one)."""
    return collection.replace("-", "_")


def candidate_collections(stem: str, extra: Iterable[str] = ()) -> list[str]:
    """Collection names the first layout stored in table ``chunks_<stem>``."""
    found = {stem, stem.replace("_", "-")}
    places = [i for i, ch in enumerate(stem) if ch == "_"]
    if len(places) <= MAX_SPELLING_UNDERSCORES:
        for choice in itertools.product("_-", repeat=len(places)):
            chars = list(stem)
            for i, ch in zip(places, choice, strict=True):
                chars[i] = ch
            found.add("".join(chars))
    found.update(c for c in extra if legacy_stem(c) == stem)
    return sorted(c for c in found if COLLECTION_PATTERN.fullmatch(c))


def resolve_documents(docs: dict[str, str], candidates: list[str]) -> dict[str, str]:
    """{doc_id: collection} for the documents ({doc_id: source}) whose id one candidate explains."""
    resolved: dict[str, str] = {}
    for doc_id, source in docs.items():
        for collection in candidates:
            if make_doc_id(collection, source) == doc_id:
                resolved[doc_id] = collection
                break
    return resolved


def migrate_legacy_tables(
    store: ChunkStore, extra_collections: Iterable[str] = (), dry_run: bool = False
) -> list[TableMigration]:
    """Move every first-layout table's rows into their collections' tables; one report per table."""
    extra = list(extra_collections)
    return [_migrate(store, name, extra, dry_run) for name in store.legacy_tables()]


def _in_list(values: Iterable[str]) -> str:
    return ", ".join(sql_string(v) for v in values)


def _migrate(store: ChunkStore, name: str, extra: list[str], dry_run: bool) -> TableMigration:
    report = TableMigration(name)
    legacy = store.open_table(name)
    if legacy is None:
        return report
    listing = legacy.search().select(["doc_id", "source"]).limit(None).to_arrow()
    report.rows = listing.num_rows
    docs: dict[str, str] = {}
    counts: dict[str, int] = {}
    for doc_id, source in zip(
        listing.column("doc_id").to_pylist(), listing.column("source").to_pylist(), strict=True
    ):
        docs.setdefault(doc_id, source or "")
        counts[doc_id] = counts.get(doc_id, 0) + 1
    owners = resolve_documents(docs, candidate_collections(name[len(LEGACY_PREFIX) :], extra))
    report.unresolved = sum(n for doc_id, n in counts.items() if doc_id not in owners)
    by_collection: dict[str, list[str]] = {}
    for doc_id, collection in owners.items():
        by_collection.setdefault(collection, []).append(doc_id)
    dimension = legacy.schema.field("vector").type.list_size
    for collection, doc_ids in sorted(by_collection.items()):
        if dry_run:
            report.moved[collection] = sum(counts[d] for d in doc_ids)
            continue
        target = store.open_or_create(collection, dimension)
        present = (
            target.search()
            .where(scoped(collection, f"doc_id IN ({_in_list(doc_ids)})"))
            .select(["doc_id"])
            .limit(None)
            .to_arrow()
        )
        newer = set(present.column("doc_id").to_pylist())
        report.kept_newer += sum(counts[d] for d in newer)
        moving = sorted(d for d in doc_ids if d not in newer)
        moved = 0
        for start in range(0, len(moving), DOCS_PER_BATCH):
            batch = moving[start : start + DOCS_PER_BATCH]
            rows = legacy.search().where(f"doc_id IN ({_in_list(batch)})").limit(None).to_arrow()
            rows = store.conform(target, rows, collection)
            target.merge_insert("chunk_id").when_not_matched_insert_all().execute(rows)
            moved += rows.num_rows
        report.moved[collection] = moved
        if moving or newer:
            store.ensure_fts_index(target)
            store.committed(collection)
        # Deleted from the first layout only once the rows are in (or newer rows are): a crash between
        # the two leaves copies that the next run skips by chunk id, never a gap.
        for start in range(0, len(doc_ids), DOCS_PER_BATCH):
            legacy.delete(f"doc_id IN ({_in_list(sorted(doc_ids)[start : start + DOCS_PER_BATCH])})")
    if not dry_run and report.unresolved == 0:
        store.db.drop_table(name)
        store.forget_table(name)
        report.dropped = True
    return report
