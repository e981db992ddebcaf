"""LanceDB behind a small class: one table of chunks per collection."""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from datetime import timedelta
from typing import TYPE_CHECKING, Any

import numpy as np

from stratus.models import check_collection_name

if TYPE_CHECKING:
    import pyarrow as pa

FTS_COLUMN = "fts_text"
SCALAR_COLUMNS = [
    "chunk_id",
    "doc_id",
    "source",
    "title",
    "section",
    "page",
    "position",
    "token_count",
    "text",
    "content_sha256",
    "metadata_json",
]


def chunk_schema(dimension: int) -> pa.Schema:
    """The Arrow schema of a collection's chunk table."""
    import pyarrow as pa

    return pa.schema(
        [
            pa.field("chunk_id", pa.string(), nullable=False),
            pa.field("doc_id", pa.string(), nullable=False),
            pa.field("source", pa.string()),
            pa.field("title", pa.string()),
            pa.field("section", pa.string()),
            pa.field("page", pa.int32()),
            pa.field("position", pa.int32()),
            pa.field("token_count", pa.int32()),
            pa.field("text", pa.string()),
            pa.field(FTS_COLUMN, pa.string()),
            pa.field("content_sha256", pa.string()),
            pa.field("metadata_json", pa.string()),
            pa.field("vector", pa.list_(pa.float32(), dimension)),
        ]
    )


def sql_string(value: str) -> str:
    """A SQL string literal with quotes escaped (LanceDB uses DataFusion SQL)."""
    return "'" + value.replace("'", "''") + "'"


def storage_options_for(uri: str, region: str, endpoint_url: str | None) -> dict[str, str]:
    """Object-store options for an s3:// LanceDB URI (credentials come from the environment)."""
    if not uri.startswith("s3://"):
        return {}
    options = {"region": region}
    if endpoint_url:
        options["aws_endpoint"] = endpoint_url
        options["allow_http"] = "true" if endpoint_url.startswith("http://") else "false"
        options["aws_virtual_hosted_style_request"] = "false"
    return options


class ChunkStore:
    """Chunk tables in one LanceDB database; tables stay open across calls."""

    def __init__(
        self,
        uri: str,
        storage_options: dict[str, str] | None = None,
        read_consistency_s: float | None = None,
    ) -> None:
        self.uri = uri
        self._storage_options = storage_options or {}
        self._read_consistency_s = read_consistency_s
        self._db: Any = None
        self._tables: dict[str, Any] = {}
        self._lock = threading.Lock()

    @property
    def db(self) -> Any:
        """The LanceDB connection (opened on first use)."""
        if self._db is None:
            import lancedb

            interval = (
                timedelta(seconds=self._read_consistency_s) if self._read_consistency_s is not None else None
            )
            self._db = lancedb.connect(
                self.uri, storage_options=self._storage_options, read_consistency_interval=interval
            )
        return self._db

    def table_name(self, collection: str) -> str:
        """The LanceDB table of a collection."""
        return f"chunks_{check_collection_name(collection).replace('-', '_')}"

    def open(self, collection: str) -> Any | None:
        """The collection's table, or None when it has none yet."""
        name = self.table_name(collection)
        with self._lock:
            table = self._tables.get(name)
            if table is None:
                try:
                    table = self.db.open_table(name)
                except (FileNotFoundError, ValueError):
                    return None
                self._tables[name] = table
            return table

    def open_or_create(self, collection: str, dimension: int) -> Any:
        """The collection's table, created empty with the chunk schema when missing."""
        table = self.open(collection)
        if table is not None:
            return table
        name = self.table_name(collection)
        with self._lock:
            table = self.db.create_table(name, schema=chunk_schema(dimension), exist_ok=True)
            self._tables[name] = table
            return table

    def collections(self) -> list[str]:
        """Collections that have a table."""
        response = self.db.list_tables()
        names = response.tables if hasattr(response, "tables") else list(response)
        return sorted(n.removeprefix("chunks_").replace("_", "-") for n in names if n.startswith("chunks_"))

    def vectors_for(self, collection: str, doc_id: str) -> dict[str, np.ndarray]:
        """Stored vectors of a document's chunks, by chunk_id (for reuse on re-ingest)."""
        table = self.open(collection)
        if table is None:
            return {}
        rows = (
            table.search()
            .where(f"doc_id = {sql_string(doc_id)}", prefilter=True)
            .select(["chunk_id", "vector"])
            .limit(None)
            .to_arrow()
        )
        ids = rows.column("chunk_id").to_pylist()
        vectors = rows.column("vector").combine_chunks().flatten().to_numpy(zero_copy_only=False)
        if not ids:
            return {}
        matrix = vectors.reshape(len(ids), -1).astype(np.float32, copy=False)
        return dict(zip(ids, matrix, strict=True))

    def write(
        self,
        collection: str,
        rows: pa.Table | None,
        replace_docs: dict[str, list[str]],
        delete_docs: Sequence[str],
        dimension: int,
    ) -> dict[str, int]:
        """One merge_insert of `rows` and one delete of stale chunks and deleted documents."""
        table = self.open_or_create(collection, dimension)
        inserted = updated = 0
        if rows is not None and rows.num_rows:
            result = (
                table.merge_insert("chunk_id")
                .when_matched_update_all()
                .when_not_matched_insert_all()
                .execute(rows)
            )
            inserted, updated = int(result.num_inserted_rows), int(result.num_updated_rows)
        clauses = [f"doc_id IN ({', '.join(sql_string(d) for d in delete_docs)})"] if delete_docs else []
        for doc_id, keep in replace_docs.items():
            kept = ", ".join(sql_string(c) for c in keep) or "''"
            clauses.append(f"(doc_id = {sql_string(doc_id)} AND chunk_id NOT IN ({kept}))")
        if clauses:
            table.delete(" OR ".join(clauses))
        self.ensure_fts_index(table)
        return {"inserted": inserted, "updated": updated}

    @staticmethod
    def ensure_fts_index(table: Any) -> None:
        """Create the native full-text index once; rows added later are searched until optimize()."""
        if any(index.index_type == "FTS" for index in table.list_indices()):
            return
        from lancedb.index import FTS

        table.create_index(FTS_COLUMN, config=FTS(with_position=False), replace=True)

    def vector_search(
        self, collection: str, vector: np.ndarray, limit: int, where: str | None = None
    ) -> list[dict[str, Any]]:
        """Nearest chunks by cosine similarity."""
        table = self.open(collection)
        if table is None:
            return []
        query = table.search(vector, vector_column_name="vector").distance_type("cosine").limit(limit)
        if where:
            query = query.where(where, prefilter=True)
        result: list[dict[str, Any]] = query.select([*SCALAR_COLUMNS, "_distance"]).to_list()
        return result

    def keyword_search(
        self, collection: str, text: str, limit: int, where: str | None = None
    ) -> list[dict[str, Any]]:
        """Best chunks by the native full-text index (BM25)."""
        table = self.open(collection)
        if table is None:
            return []
        query = table.search(text, query_type="fts", fts_columns=FTS_COLUMN).limit(limit)
        if where:
            query = query.where(where, prefilter=True)
        result: list[dict[str, Any]] = query.select([*SCALAR_COLUMNS, "_score"]).to_list()
        return result

    def maintain(self, collection: str, vector_index_min_rows: int, keep_versions_s: float) -> dict[str, Any]:
        """Compact, refresh the full-text index, prune old versions; add an ANN index once large."""
        table = self.open(collection)
        if table is None:
            return {"collection": collection, "rows": 0}
        started = time.perf_counter()
        table.optimize(cleanup_older_than=timedelta(seconds=keep_versions_s))
        self.ensure_fts_index(table)
        rows = int(table.count_rows())
        built_vector_index = False
        has_vector_index = any(index.index_type.startswith("IVF") for index in table.list_indices())
        if rows >= vector_index_min_rows and not has_vector_index:
            table.create_index(metric="cosine", vector_column_name="vector", index_type="IVF_PQ")
            built_vector_index = True
        return {
            "collection": collection,
            "rows": rows,
            "vector_index_built": built_vector_index,
            "seconds": round(time.perf_counter() - started, 3),
        }
