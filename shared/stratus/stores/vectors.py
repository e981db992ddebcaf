"""LanceDB behind a small class: one table of chunks per collection.

A collection's table is ``chunks-<collection>``: the collection name verbatim behind a fixed prefix, so
the mapping is injective and its inverse exact (collection names are ``[a-z0-9][a-z0-9_-]{0,62}``,
which LanceDB accepts as they are). Every row also carries its collection (column ``collection``), and
every query and delete filters on it: a second wall, should two collections ever share a table again.
Tables of the first layout (``chunks_<collection with '-' as '_'>``, no collection column) are moved
by ``stratus migrate-tables`` (stratus_tools.migration).
"""

from __future__ import annotations

import contextvars
import logging
import re
import threading
import time
import weakref
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, Any

import numpy as np

from stratus.errors import TransientError
from stratus.models import COLLECTION_PATTERN, check_collection_name
from stratus.stores.schema import (
    COLLECTION_COLUMN,
    FTS_COLUMN,
    HIT_COLUMNS,
    LATER_COLUMNS,
    SCALAR_COLUMNS,
    metadata_field,
    present,
    table_schema,
)

if TYPE_CHECKING:
    import pyarrow as pa

    from stratus.stores.replica import TableReplica

_log = logging.getLogger(__name__)
# A table's background refresh stops after this long without a query.
WATCH_IDLE_S = 60.0


def handle_interval_s(read_consistency_s: float, memory_max_rows: int) -> float:
    """How stale a table handle (or replica) may be: half the window when in-memory copies take the rest."""
    return read_consistency_s / 2 if memory_max_rows > 0 else read_consistency_s


TABLE_PREFIX = "chunks-"
# The first layout's prefix: `a-b` and `a_b` both became chunks_a_b (see stratus_tools.migration).
LEGACY_PREFIX = "chunks_"
# LanceDB's own answer when a table is absent; every other ValueError is a fault of the store.
_NOT_FOUND = re.compile(r"Table '[^']*' was not found")
# `stratus reindex` builds generation N>0 of a collection as ``chunks-<collection>.g<N>``: "." is
# outside the collection alphabet, so (collection, generation) -> name stays injective.
_GENERATION_RE = re.compile(r"\.g([1-9][0-9]{0,8})$")


def table_name_for(collection: str, generation: int = 0) -> str:
    """The LanceDB table of a collection's generation: ``chunks-<collection>[.g<N>]`` (injective)."""
    if generation < 0:
        raise ValueError("generation must be >= 0")
    suffix = f".g{generation}" if generation else ""
    return TABLE_PREFIX + check_collection_name(collection) + suffix


def _split_table_name(name: str) -> tuple[str, int] | None:
    if not name.startswith(TABLE_PREFIX):
        return None
    rest = name[len(TABLE_PREFIX) :]
    generation = 0
    match = _GENERATION_RE.search(rest)
    if match:
        generation = int(match.group(1))
        rest = rest[: match.start()]
    return (rest, generation) if COLLECTION_PATTERN.fullmatch(rest) else None


def collection_for_table(name: str) -> str | None:
    """The collection whose table (of any generation) is `name`, or None when it is no collection's."""
    found = _split_table_name(name)
    return found[0] if found else None


def generation_for_table(name: str) -> int | None:
    """The generation of a collection's table `name` (0 for ``chunks-<collection>``), or None."""
    found = _split_table_name(name)
    return found[1] if found else None


def scoped(collection: str, where: str | None = None) -> str:
    """A row predicate confined to `collection`, and to `where` when given."""
    clause = f"{COLLECTION_COLUMN} = {sql_string(collection)}"
    return f"{clause} AND ({where})" if where else clause


class StoreUnavailableError(TransientError):
    """The vector store could not be reached or refused access (not the same as "no such table")."""


def sql_string(value: str) -> str:
    """A SQL string literal with quotes escaped (LanceDB uses DataFusion SQL)."""
    return "'" + value.replace("'", "''") + "'"


def storage_options_for(
    uri: str,
    region: str,
    endpoint_url: str | None,
    connect_timeout_s: float = 5.0,
    timeout_s: float = 60.0,
) -> dict[str, str]:
    """Object-store options for an s3:// LanceDB URI (credentials come from the environment)."""
    if not uri.startswith("s3://"):
        return {}
    options = {
        "region": region,
        "connect_timeout": f"{round(connect_timeout_s * 1000)}ms",
        "timeout": f"{round(timeout_s * 1000)}ms",
    }
    if endpoint_url:
        options["aws_endpoint"] = endpoint_url
        options["allow_http"] = "true" if endpoint_url.startswith("http://") else "false"
        options["aws_virtual_hosted_style_request"] = "false"
    return options


class TableSnapshot:
    """One table version held in memory: unit vectors and the columns a hit shows, by chunk_id.

    Small tables (the flat-search regime, before an ANN index pays off) are searched faster from
    memory than through a scan of the vector column: a matrix-vector product and a partial sort.
    """

    def __init__(self, version: int, rows: pa.Table) -> None:
        self.version = version
        self.ids: list[str] = rows.column("chunk_id").to_pylist()
        self.position = {chunk_id: i for i, chunk_id in enumerate(self.ids)}
        vectors = rows.column("vector")
        flat = vectors.combine_chunks().flatten().to_numpy(zero_copy_only=False)
        # The width comes from the column's type (a fixed-size list), not from the data: a table whose
        # rows were all deleted has zero rows, and numpy cannot infer a -1 axis from an empty array.
        dimension = getattr(vectors.type, "list_size", None) or (-1 if self.ids else 0)
        matrix = np.ascontiguousarray(flat.reshape(len(self.ids), dimension), dtype=np.float32)
        norms = np.linalg.norm(matrix, axis=1, keepdims=True)
        self.vectors = matrix / np.maximum(norms, 1e-12)
        self.columns = present(rows, HIT_COLUMNS)
        self.rows = rows.select(self.columns).combine_chunks()
        self._collections = np.asarray(self.rows.column(COLLECTION_COLUMN).to_pylist(), dtype=object)
        self._masks: dict[str, np.ndarray | None] = {}

    def __len__(self) -> int:
        return len(self.ids)

    def _mask(self, collection: str) -> np.ndarray | None:
        """Rows of other collections (None when every row is `collection`'s, the normal case)."""
        if collection not in self._masks:
            foreign = self._collections != collection
            self._masks[collection] = foreign if bool(foreign.any()) else None
        return self._masks[collection]

    def nearest(self, vector: np.ndarray, limit: int, collection: str) -> tuple[list[str], list[float]]:
        """The `limit` chunks of `collection` of highest cosine similarity, best first."""
        if not self.ids:
            return [], []
        query = np.asarray(vector, dtype=np.float32)
        query = query / max(float(np.linalg.norm(query)), 1e-12)
        # einsum, not BLAS: one thread, so no wake-up of a BLAS pool competing with onnxruntime's
        # and LanceDB's threads (BLAS was 0.2 ms p50 but 16 ms p95 on a busy 2-core machine).
        similarity = np.einsum("ij,j->i", self.vectors, query)
        foreign = self._mask(collection)
        if foreign is not None:
            similarity = np.where(foreign, -np.inf, similarity)
            limit = min(limit, int((~foreign).sum()))
            if limit <= 0:
                return [], []
        limit = min(limit, len(similarity))
        top = np.argpartition(-similarity, limit - 1)[:limit]
        top = top[np.argsort(-similarity[top], kind="stable")]
        return [self.ids[i] for i in top], similarity[top].tolist()

    def row(self, chunk_id: str, collection: str) -> dict[str, Any] | None:
        """The hit columns of one chunk of `collection` (None when this version lacks it)."""
        i = self.position.get(chunk_id)
        if i is None or self._collections[i] != collection:
            return None
        return {name: self.rows.column(name)[i].as_py() for name in self.columns}

    def has(self, chunk_id: str, collection: str) -> bool:
        """True when this version holds the chunk, in `collection`."""
        i = self.position.get(chunk_id)
        return i is not None and self._collections[i] == collection

    def vector(self, chunk_id: str, collection: str) -> np.ndarray | None:
        """The unit vector of one chunk of `collection`."""
        i = self.position.get(chunk_id)
        return None if i is None or self._collections[i] != collection else self.vectors[i]


@dataclass(frozen=True)
class DocumentChunks:
    """One document's chunks as stored: what "more like this" starts from."""

    title: str
    chunk_ids: list[str]
    texts: list[str]
    vectors: np.ndarray


class CollectionReader:
    """One search's view of a collection's chunks: keyword and vector candidates, then their rows.

    Reads from the in-memory copy when the store has one (the retrievers then return ids only),
    else from the table; rows committed after the copy was taken are read in one query. Every query
    is confined to the collection, and only its rows are ever handed out, whatever a retriever returned.
    """

    def __init__(self, store: ChunkStore, collection: str, table: Any, with_vectors: bool) -> None:
        self._store = store
        self._collection = collection
        self._table = table
        self._snapshot = store.snapshot(table)
        self.column_names = set(table.schema.names)
        self._columns = (
            ["chunk_id", COLLECTION_COLUMN]
            if self._snapshot is not None
            else present(table, HIT_COLUMNS) + (["vector"] if with_vectors else [])
        )
        self._tables: list[tuple[pa.Table, dict[str, int]]] = []
        self._fetched: dict[str, dict[str, Any]] = {}

    def keyword(self, text: str, limit: int, where: str | None = None) -> tuple[list[str], list[float]]:
        """Best chunks by the native full-text index (BM25): their ids and scores, best first."""
        found = self._store.keyword_query(
            self._table, text, limit, self._columns, scoped(self._collection, where)
        )
        ids, found = self._keep(found)
        return ids, found.column("_score").to_pylist()

    def nearest(
        self, vector: np.ndarray, limit: int, where: str | None = None
    ) -> tuple[list[str], list[float]]:
        """Nearest chunks by cosine similarity: their ids and similarities, best first."""
        if self._snapshot is not None and where is None:
            return self._snapshot.nearest(vector, limit, self._collection)
        found = self._store.vector_query(
            self._table, vector, limit, self._columns, scoped(self._collection, where)
        )
        ids, found = self._keep(found)
        return ids, [1.0 - d for d in found.column("_distance").to_pylist()]

    def _keep(self, table: pa.Table) -> tuple[list[str], pa.Table]:
        """Keep a retriever's rows (those of the collection); their ids and the rows kept, in order."""
        ids: list[str] = table.column("chunk_id").to_pylist()
        if COLLECTION_COLUMN in table.column_names:
            owners = table.column(COLLECTION_COLUMN).to_pylist()
            keep = [i for i, owner in enumerate(owners) if owner == self._collection]
            if len(keep) != len(ids):
                table = table.take(keep)
                ids = [ids[i] for i in keep]
        if self._snapshot is None:
            self._tables.append((table, {cid: i for i, cid in enumerate(ids)}))
        return ids, table

    def has(self, chunk_id: str) -> bool:
        """Whether the chunk's row is at hand (`load` reads those that are not)."""
        if self._snapshot is not None and self._snapshot.has(chunk_id, self._collection):
            return True
        return chunk_id in self._fetched or any(chunk_id in index for _, index in self._tables)

    def load(self, chunk_ids: list[str]) -> None:
        """Read the rows not at hand (committed after the in-memory copy): one query for all of them."""
        missing = [cid for cid in chunk_ids if not self.has(cid)]
        if not missing:
            return
        listed = ", ".join(sql_string(cid) for cid in missing)
        found = (
            self._table.search()
            .where(scoped(self._collection, f"chunk_id IN ({listed})"))
            .select(present(self._table, [*HIT_COLUMNS, "vector"]))
            .limit(len(missing))
            .to_arrow()
        )
        for row in found.to_pylist():
            if row.get(COLLECTION_COLUMN) == self._collection:
                self._fetched[row["chunk_id"]] = row

    def row(self, chunk_id: str) -> dict[str, Any]:
        """The chunk's hit columns (KeyError when it is not at hand)."""
        if self._snapshot is not None:
            found = self._snapshot.row(chunk_id, self._collection)
            if found is not None:
                return found
        for table, index in self._tables:
            i = index.get(chunk_id)
            if i is not None:
                return {name: table.column(name)[i].as_py() for name in present(table, HIT_COLUMNS)}
        if chunk_id in self._fetched:
            return self._fetched[chunk_id]
        raise KeyError(chunk_id)

    def document(self, doc_id: str, limit: int) -> DocumentChunks | None:
        """A document's first `limit` chunks (by position) with their stored vectors; None if it has none."""
        columns = present(self._table, ["chunk_id", COLLECTION_COLUMN, "position", "title", "text", "vector"])
        found = (
            self._table.search()
            .where(scoped(self._collection, f"doc_id = {sql_string(doc_id)}"), prefilter=True)
            .select(columns)
            .limit(None)
            .to_arrow()
        )
        rows = [r for r in found.to_pylist() if r.get(COLLECTION_COLUMN) == self._collection]
        rows = sorted(rows, key=lambda r: r.get("position") or 0)[:limit]
        if not rows:
            return None
        return DocumentChunks(
            title=rows[0].get("title") or "",
            chunk_ids=[r["chunk_id"] for r in rows],
            texts=[r.get("text") or "" for r in rows],
            vectors=np.asarray([r["vector"] for r in rows], dtype=np.float32),
        )

    def vectors(self, chunk_ids: list[str]) -> np.ndarray:
        """The chunks' stored vectors, one row each (KeyError when one is not at hand)."""
        out = []
        for chunk_id in chunk_ids:
            vector = self._snapshot.vector(chunk_id, self._collection) if self._snapshot is not None else None
            if vector is None:
                for table, index in self._tables:
                    i = index.get(chunk_id)
                    if i is not None:
                        vector = np.asarray(table.column("vector")[i].values.to_numpy(zero_copy_only=False))
                        break
            if vector is None and chunk_id in self._fetched:
                vector = np.asarray(self._fetched[chunk_id]["vector"], dtype=np.float32)
            if vector is None:
                raise KeyError(chunk_id)
            out.append(vector)
        return np.vstack(out).astype(np.float32) if out else np.empty((0, 0), dtype=np.float32)


class ChunkStore:
    """Chunk tables in one LanceDB database; tables stay open across calls."""

    def __init__(
        self,
        uri: str,
        storage_options: dict[str, str] | None = None,
        read_consistency_s: float | None = None,
        filter_fields: Mapping[str, str] | None = None,
        replica: TableReplica | None = None,
        memory_max_rows: int = 0,
        generations: Callable[[str], int] | None = None,
        compact_every: int = 0,
        compact_keep_s: float = 30.0,
    ) -> None:
        self.uri = uri
        # The writer compacts a table and prunes its versions every `compact_every` writes (0: never;
        # maintenance still does hourly): a commit's cost grows with the versions and fragments kept.
        self._compact_every = compact_every
        self._compact_keep_s = compact_keep_s
        self._writes_since_compact: dict[str, int] = {}
        # The collection's serving generation (collection settings); None: always generation 0.
        self._generations = generations
        self._storage_options = storage_options or {}
        self._read_consistency_s = read_consistency_s
        self.filter_fields = dict(filter_fields or {})
        self.replica = replica
        self.memory_max_rows = memory_max_rows
        self._snapshots: dict[str, TableSnapshot] = {}
        self._snapshot_misses: dict[str, int] = {}
        self._snapshot_checked: dict[str, float] = {}
        # When each copy was last known to hold its table's latest version (monotonic).
        self._snapshot_confirmed: dict[str, float] = {}
        # Tables this process wrote: their next read waits for a copy that holds the write.
        self._snapshot_must_see: set[str] = set()
        self._snapshot_build_lock = threading.Lock()
        self._queried: dict[str, float] = {}  # collection -> last query (monotonic)
        self._watchers: set[str] = set()
        self._db: Any = None
        self._tables: dict[str, Any] = {}
        self._lock = threading.Lock()

    @property
    def db(self) -> Any:
        """The LanceDB connection (opened on first use)."""
        if self._db is None:
            from stratus.stores.lance import skip_rest_namespace_client

            skip_rest_namespace_client()
            import lancedb

            interval = (
                timedelta(seconds=handle_interval_s(self._read_consistency_s, self.memory_max_rows))
                if self._read_consistency_s is not None
                else None
            )
            try:
                self._db = lancedb.connect(
                    self.uri, storage_options=self._storage_options, read_consistency_interval=interval
                )
            except (OSError, ValueError, RuntimeError) as error:
                raise StoreUnavailableError(f"the vector store {self.uri} is unavailable: {error}") from error
        return self._db

    def table_name(self, collection: str, generation: int | None = None) -> str:
        """The LanceDB table of a collection: its serving generation unless `generation` is given."""
        if generation is None:
            generation = self._generations(collection) if self._generations is not None else 0
        return table_name_for(collection, generation)

    def open(self, collection: str, generation: int | None = None) -> Any | None:
        """The collection's table, or None when it has none yet; StoreUnavailableError on other faults."""
        return self.open_table(self.table_name(collection, generation))

    def open_table(self, name: str) -> Any | None:
        """A table by its LanceDB name, or None when it does not exist.

        LanceDB raises ValueError both for a missing table and for a refused or failed S3 request; only
        its "was not found" answer means absent, the rest raise StoreUnavailableError (a 503, a retry).
        """
        with self._lock:
            table = self._tables.get(name)
            if table is None:
                try:
                    table = self.db.open_table(name)
                except FileNotFoundError:
                    return None
                except ValueError as error:
                    if _NOT_FOUND.search(str(error)):
                        return None
                    raise StoreUnavailableError(f"could not open table {name}: {error}") from error
                except (OSError, RuntimeError) as error:
                    raise StoreUnavailableError(f"could not open table {name}: {error}") from error
                self._tables[name] = table
            return table

    def forget_table(self, name: str) -> None:
        """Drop a cached handle (a table dropped or replaced by the migration)."""
        with self._lock:
            self._tables.pop(name, None)

    def open_or_create(self, collection: str, dimension: int, generation: int | None = None) -> Any:
        """The collection's table, created empty with the chunk schema when missing."""
        name = self.table_name(collection, generation)
        table = self.open_table(name)
        if table is not None:
            return table
        with self._lock:
            table = self.db.create_table(
                name, schema=table_schema(dimension, self.filter_fields), exist_ok=True
            )
            self._tables[name] = table
            return table

    def table_names(self) -> list[str]:
        """Every table in the database (all pages)."""
        names: list[str] = []
        token: str | None = None
        try:
            while True:
                response = self.db.list_tables(page_token=token)
                if not hasattr(response, "tables"):
                    return sorted(response)
                names.extend(response.tables)
                token = response.page_token
                if not token:
                    return sorted(names)
        except (OSError, ValueError, RuntimeError) as error:
            raise StoreUnavailableError(f"could not list the tables of {self.uri}: {error}") from error

    def collections(self) -> list[str]:
        """Collections that have a table (one name however many generations it has)."""
        return sorted({c for n in self.table_names() if (c := collection_for_table(n)) is not None})

    def legacy_tables(self) -> list[str]:
        """Tables of the first layout still waiting for `stratus migrate-tables`."""
        return [n for n in self.table_names() if n.startswith(LEGACY_PREFIX)]

    def chunk(self, collection: str, chunk_id: str, columns: Sequence[str]) -> dict[str, Any] | None:
        """One chunk's `columns`, or None when the collection has no such chunk."""
        table = self.open(collection)
        if table is None:
            return None
        rows: list[dict[str, Any]] = (
            table.search()
            .where(scoped(collection, f"chunk_id = {sql_string(chunk_id)}"))
            .select(list(columns))
            .limit(1)
            .to_list()
        )
        return rows[0] if rows else None

    def vectors_for_documents(
        self, collection: str, doc_ids: Sequence[str]
    ) -> dict[str, dict[str, np.ndarray]]:
        """Stored vectors of several documents' chunks in one scan: {doc_id: {chunk_id: vector}}."""
        table = self.open(collection) if doc_ids else None
        if table is None:
            return {}
        listed = ", ".join(sql_string(d) for d in sorted(set(doc_ids)))
        rows = (
            table.search()
            .where(scoped(collection, f"doc_id IN ({listed})"), prefilter=True)
            .select(["doc_id", "chunk_id", "vector"])
            .limit(None)
            .to_arrow()
        )
        if not rows.num_rows:
            return {}
        docs = rows.column("doc_id").to_pylist()
        ids = rows.column("chunk_id").to_pylist()
        flat = rows.column("vector").combine_chunks().flatten().to_numpy(zero_copy_only=False)
        matrix = flat.reshape(len(ids), -1).astype(np.float32, copy=False)
        found: dict[str, dict[str, np.ndarray]] = {}
        for doc_id, chunk_id, vector in zip(docs, ids, matrix, strict=True):
            found.setdefault(doc_id, {})[chunk_id] = vector
        return found

    def write(
        self,
        collection: str,
        rows: pa.Table | None,
        replace_docs: dict[str, list[str]],
        delete_docs: Sequence[str],
        dimension: int,
        generation: int | None = None,
    ) -> dict[str, int]:
        """One merge_insert of `rows` and one delete of stale chunks and deleted documents."""
        table = self.open_or_create(collection, dimension, generation)
        inserted = updated = 0
        if rows is not None and rows.num_rows:
            rows = self.conform(table, rows, collection)
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
            table.delete(scoped(collection, " OR ".join(clauses)))
        self.ensure_fts_index(table)
        self._compact_now_and_then(table, self.table_name(collection, generation))
        self.committed(collection, generation)
        return {"inserted": inserted, "updated": updated}

    def _compact_now_and_then(self, table: Any, name: str) -> None:
        """Every `compact_every` writes of this process to a table: compact it, prune its old versions.

        Kept short of the readers' window (they read a version at most read_consistency_s old). A failure
        is logged, never raised: the write it follows is committed.
        """
        if not self._compact_every:
            return
        count = self._writes_since_compact.get(name, 0) + 1
        self._writes_since_compact[name] = count
        if count < self._compact_every:
            return
        self._writes_since_compact[name] = 0
        started = time.perf_counter()
        try:
            table.optimize(cleanup_older_than=timedelta(seconds=self._compact_keep_s))
        except Exception:
            _log.exception(
                "compaction after writes failed; maintenance compacts later", extra={"table": name}
            )
            return
        _log.info(
            "table compacted after writes",
            extra={"table": name, "writes": count, "seconds": round(time.perf_counter() - started, 3)},
        )

    def drop_table(self, name: str) -> bool:
        """Drop a table by name (a generation a reindex replaced); False when it did not exist."""
        self.forget_table(name)
        if self.open_table(name) is None:
            return False
        self.forget_table(name)
        self.db.drop_table(name)
        self._snapshots.pop(name, None)
        return True

    @staticmethod
    def ensure_fts_index(table: Any) -> None:
        """Create the native full-text index once; rows added later are searched until optimize()."""
        if any(index.index_type == "FTS" for index in table.list_indices()):
            return
        from lancedb.index import FTS

        table.create_index(FTS_COLUMN, config=FTS(with_position=False), replace=True)

    def search_table(self, collection: str, *, watch: bool = True) -> Any | None:
        """The table queries read: the local replica of an S3 table when one is configured.

        A table read with `watch` is kept fresh by a background thread while queries keep coming
        (`_watch`), so that sparse queries find the replica and the in-memory copy up to date.
        """
        if watch and self._read_consistency_s:
            self._watch(collection)
        if self.replica is not None:
            from stratus.stores.replica import ReplicaTooLarge

            try:
                return self.replica.table(self.table_name(collection), aside=watch)
            except ReplicaTooLarge:
                pass  # too large to copy into /tmp: read S3 directly
            except Exception as error:
                # Whatever failed (S3 refused or unreachable, a local read), it is not "no such table".
                raise StoreUnavailableError(f"could not read the replica of {collection}: {error}") from error
        return self.open(collection)

    def _watch(self, collection: str) -> None:
        """Note the query; start the table's watcher unless it runs."""
        self._queried[collection] = time.monotonic()
        with self._lock:
            if collection in self._watchers:
                return
            self._watchers.add(collection)
        # The caller's context (its AWS principal, locally) goes with the thread; the store by weak
        # reference, so a store nobody uses any more (services.reset) ends its watchers.
        context = contextvars.copy_context()
        threading.Thread(
            target=context.run,
            args=(_keep_fresh, weakref.ref(self), collection, (self._read_consistency_s or 1.0) / 4),
            name=f"watch-{collection}",
            daemon=True,
        ).start()

    def reader(self, collection: str, *, with_vectors: bool = False) -> CollectionReader | None:
        """One search's reader of `collection` (None: no such collection); `with_vectors` for MMR."""
        table = self.search_table(collection)
        return None if table is None else CollectionReader(self, collection, table, with_vectors)

    def snapshot(self, table: Any, *, aside: bool = True) -> TableSnapshot | None:
        """The in-memory copy of the table, when it is small and has no ANN index (else None).

        Built on first use (one scan of the hit columns and vectors). A query that finds the table's
        version moved (asked at most every read_consistency_s / 8) while the copy was confirmed
        current less than read_consistency_s / 2 ago (steady traffic) keeps the copy and has the new
        one built aside; otherwise, and after a commit by this process (read-your-writes), it waits
        for the rebuild, a rebuild in flight for at most read_consistency_s / 2. With the handle's own
        lag (`handle_interval_s`) a commit is served within read_consistency_s. `aside=False` (a
        caller off the request path, the watcher) builds in the calling thread.
        """
        if self.memory_max_rows <= 0:
            return None
        key = str(table.name)
        current = self._snapshots.get(key)
        # Asking the table its version costs a hop to LanceDB's event loop (~0.2-1 ms); the handle
        # itself only moves every handle_interval_s, so an eighth of the window is often enough.
        now = time.monotonic()
        consistency = self._read_consistency_s or 0.0
        must_see = key in self._snapshot_must_see
        if (
            current is not None
            and not must_see
            and now - self._snapshot_checked.get(key, 0.0) < consistency / 8
        ):
            return current
        version = int(table.version)
        self._snapshot_checked[key] = now
        if current is not None and current.version == version:
            self._snapshot_confirmed[key] = now
            self._snapshot_must_see.discard(key)
            return current
        if current is None and self._snapshot_misses.get(key) == version:
            return None
        fresh_enough = now - self._snapshot_confirmed.get(key, 0.0) < consistency / 2
        if current is not None and not must_see and fresh_enough and aside:
            if self._snapshot_build_lock.acquire(blocking=False):
                context = contextvars.copy_context()
                threading.Thread(
                    target=context.run,
                    args=(self._build_snapshot_aside, key, table, version, now),
                    daemon=True,
                ).start()
            return current
        # Without a copy to serve, wait for the build lock; with one, a rebuild in flight (it holds a
        # newer version) is waited for a little, never long.
        if not self._snapshot_build_lock.acquire(
            timeout=-1 if current is None else max(consistency / 2, 0.5)
        ):
            return current
        try:
            return self._build_snapshot_locked(key, table, version, now)
        finally:
            self._snapshot_build_lock.release()

    def _build_snapshot_aside(self, key: str, table: Any, version: int, asked_at: float) -> None:
        """Build the copy in a thread that already holds the build lock."""
        try:
            self._build_snapshot_locked(key, table, version, asked_at)
        except Exception:
            _log.exception("in-memory copy of %s at version %s failed; the next query retries", key, version)
        finally:
            self._snapshot_build_lock.release()

    def _build_snapshot_locked(
        self, key: str, table: Any, version: int, asked_at: float
    ) -> TableSnapshot | None:
        current = self._snapshots.get(key)
        if current is not None and current.version >= version:
            self._snapshot_must_see.discard(key)
            return current
        rows = int(table.count_rows())
        indexed = any(index.index_type.startswith("IVF") for index in table.list_indices())
        snapshot = None
        if rows > self.memory_max_rows or indexed:
            self._snapshots.pop(key, None)
            self._snapshot_misses[key] = version
        else:
            data = table.search().select(present(table, [*HIT_COLUMNS, "vector"])).limit(None).to_arrow()
            snapshot = self._snapshots[key] = TableSnapshot(version, data)
            self._snapshot_confirmed[key] = asked_at  # the version was the latest when it was asked
        # Only once built: a failed build leaves read-your-writes owed to the next query.
        self._snapshot_must_see.discard(key)
        return snapshot

    def committed(self, collection: str, generation: int | None = None) -> None:
        """This process wrote the table: its next read re-checks the version (replica and snapshot)."""
        name = self.table_name(collection, generation)
        self._snapshot_checked.pop(name, None)
        self._snapshot_must_see.add(name)
        if self.replica is not None:
            self.replica.invalidate(name)

    @staticmethod
    def vector_query(
        table: Any, vector: np.ndarray, limit: int, columns: Sequence[str], where: str | None = None
    ) -> pa.Table:
        """Nearest chunks by cosine distance (column ``_distance``), as Arrow."""
        query = table.search(vector, vector_column_name="vector").distance_type("cosine").limit(limit)
        if where:
            query = query.where(where, prefilter=True)
        return query.select([*columns, "_distance"]).to_arrow()

    @staticmethod
    def keyword_query(
        table: Any, text: str, limit: int, columns: Sequence[str], where: str | None = None
    ) -> pa.Table:
        """Best chunks by the native full-text index (BM25, column ``_score``), as Arrow."""
        query = table.search(text, query_type="fts", fts_columns=FTS_COLUMN).limit(limit)
        if where:
            query = query.where(where, prefilter=True)
        return query.select([*columns, "_score"]).to_arrow()

    def vector_search(
        self, collection: str, vector: np.ndarray, limit: int, where: str | None = None
    ) -> list[dict[str, Any]]:
        """Nearest chunks by cosine similarity."""
        table = self.search_table(collection)
        if table is None:
            return []
        rows: list[dict[str, Any]] = self.vector_query(
            table, vector, limit, present(table, SCALAR_COLUMNS), scoped(collection, where)
        ).to_pylist()
        return rows

    def keyword_search(
        self, collection: str, text: str, limit: int, where: str | None = None
    ) -> list[dict[str, Any]]:
        """Best chunks by the native full-text index (BM25)."""
        table = self.search_table(collection)
        if table is None:
            return []
        rows: list[dict[str, Any]] = self.keyword_query(
            table, text, limit, present(table, SCALAR_COLUMNS), scoped(collection, where)
        ).to_pylist()
        return rows

    def conform(self, table: Any, rows: pa.Table, collection: str) -> pa.Table:
        """Rows shaped like the table: declared fields it lacks are added first (and back-filled);
        table columns the rows lack (a field no longer declared) are null; every row is `collection`'s."""
        import pyarrow as pa

        from stratus.fields import COLUMN_PREFIX

        names = set(table.schema.names)
        later = [f for f in rows.schema if f.name not in names and f.name in LATER_COLUMNS]
        if later:
            table.add_columns(later)  # nullable, nothing to back-fill: older chunks have no sheet/rows
            names = set(table.schema.names)
        new = [f for f in rows.schema if f.name not in names and f.name.startswith(COLUMN_PREFIX)]
        if new:
            self._add_metadata_columns(table, new)
        schema = table.schema
        # The collection comes from the caller, never from the rows: a row cannot name another tenant.
        arrays = [
            pa.array([collection] * rows.num_rows, type=f.type)
            if f.name == COLLECTION_COLUMN
            else rows.column(f.name).cast(f.type)
            if f.name in rows.column_names
            else pa.nulls(rows.num_rows, f.type)
            for f in schema
        ]
        return pa.Table.from_arrays(arrays, schema=schema)

    def promote_declared_fields(self, collection: str) -> list[str]:
        """Add (and back-fill) the m_<name> columns of declared fields the table lacks; return them."""
        table = self.open(collection)
        if table is None:
            return []
        names = set(table.schema.names)
        new = [
            metadata_field(name, kind)
            for name, kind in sorted(self.filter_fields.items())
            if metadata_field(name, kind).name not in names
        ]
        if new:
            self._add_metadata_columns(table, new)
        return [f.name for f in new]

    def _add_metadata_columns(self, table: Any, fields: Sequence[pa.Field]) -> None:
        """Add nullable columns and fill them from each row's metadata_json (one merge_insert)."""
        import json

        import pyarrow as pa

        from stratus.fields import COLUMN_PREFIX, coerce_value

        table.add_columns(list(fields))
        existing = table.search().select(["chunk_id", "metadata_json"]).limit(None).to_arrow()
        if not existing.num_rows:
            return
        kinds = {
            f.name: {pa.int64(): "int", pa.float64(): "float", pa.bool_(): "bool"}.get(f.type, "string")
            for f in fields
        }
        parsed = [json.loads(m or "{}") for m in existing.column("metadata_json").to_pylist()]
        columns: dict[str, pa.Array] = {"chunk_id": existing.column("chunk_id").combine_chunks()}
        for f in fields:
            name = f.name.removeprefix(COLUMN_PREFIX)
            values = [coerce_value(kinds[f.name], m.get(name)) for m in parsed]
            columns[f.name] = pa.array(values, type=f.type)
        table.merge_insert("chunk_id").when_matched_update_all().execute(pa.table(columns))

    def maintain(self, collection: str, vector_index_min_rows: int, keep_versions_s: float) -> dict[str, Any]:
        """Compact, refresh the full-text index, prune old versions; add an ANN index once large."""
        table = self.open(collection)
        if table is None:
            return {"collection": collection, "rows": 0}
        started = time.perf_counter()
        self.promote_declared_fields(collection)
        table.optimize(cleanup_older_than=timedelta(seconds=keep_versions_s))
        self.ensure_fts_index(table)
        rows = int(table.count_rows())
        built_vector_index = False
        # LanceDB reports vector index types as "IvfPq", "IvfFlat", "IvfHnswSq", ...
        has_vector_index = any(index.index_type.upper().startswith("IVF") for index in table.list_indices())
        if rows >= vector_index_min_rows and not has_vector_index:
            from lancedb.index import IvfPq

            table.create_index("vector", config=IvfPq(distance_type="cosine"))
            built_vector_index = True
        return {
            "collection": collection,
            "rows": rows,
            "vector_index_built": built_vector_index,
            "seconds": round(time.perf_counter() - started, 3),
        }


def _keep_fresh(store_ref: weakref.ref[ChunkStore], collection: str, period_s: float) -> None:
    """Every `period_s`, read the table as a query would (replica sync, copy rebuild), off the request path.

    Stops once no query came for WATCH_IDLE_S, after three failures in a row (the next query starts
    it again), or when the store is gone. On Lambda the thread is frozen between invocations, so the
    first query after a thaw may wait for a refresh, as without it.
    """
    failures = 0
    while failures < 3:
        time.sleep(period_s)
        store = store_ref()
        if store is None:
            return
        if time.monotonic() - store._queried.get(collection, 0.0) >= WATCH_IDLE_S:
            break
        try:
            table = store.search_table(collection, watch=False)
            if table is not None:
                store.snapshot(table, aside=False)
            replica = store.replica
            # (a replica keeps serving when a sync fails: count its failures as the watcher's)
            failures = replica.stats(store.table_name(collection))["failures"] if replica is not None else 0
        except Exception as error:
            failures += 1
            _log.info("background refresh of %s failed (%s); queries refresh it", collection, error)
        del store
    store = store_ref()
    if store is not None:
        with store._lock:
            store._watchers.discard(collection)
