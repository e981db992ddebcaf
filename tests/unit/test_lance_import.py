"""LanceDB opens without importing its REST namespace client's API modules (cold start)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

CHILD = """
import json, sys
import pyarrow as pa
from stratus.stores.vectors import ChunkStore
store = ChunkStore(sys.argv[1])
table = store.db.create_table("t", pa.table({"x": [1, 2, 3]}))
print(json.dumps({
    "rows": store.db.open_table("t").count_rows(),
    "loaded": sorted(m for m in sys.modules if m.startswith("lance_namespace_urllib3_client.api")),
}))
"""


def test_lancedb_works_without_the_rest_client_api_modules(tmp_path: Path) -> None:
    # Given a fresh interpreter / When the chunk store creates and reopens a table
    result = subprocess.run(
        [sys.executable, "-c", CHILD, str(tmp_path / "db")], capture_output=True, text=True, check=True
    )
    report = json.loads(result.stdout.strip().splitlines()[-1])
    # Then the table works, and none of the REST client's API modules was imported
    assert report["rows"] == 3
    assert report["loaded"] == []


def test_without_the_skip_lancedb_loads_them() -> None:
    # Given a fresh interpreter importing lancedb directly
    code = (
        "import sys, lancedb; "
        "print(sum(m.startswith('lance_namespace_urllib3_client.api') for m in sys.modules))"
    )
    # Then the API modules load (so the test above is not vacuous)
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert int(result.stdout.strip()) > 0
