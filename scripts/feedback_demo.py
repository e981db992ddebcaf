"""Play users of the sample collection: search 12 questions, rate each top-5 hit up when it comes from the
document that answers the question, down otherwise (needs `make up` running; reads .stratus/local.json).

Then: `stratus feedback export docs --out /tmp/fb && stratus eval /tmp/fb` (figures in docs/console.md).
"""

from __future__ import annotations

import json
from pathlib import Path

import httpx

JUDGED = {
    "How do I run the tests?": ["docs/development.md", "README.md"],
    "How are documents chunked?": ["docs/ingestion.md"],
    "How do I deploy Stratus to AWS?": ["docs/deploy.md"],
    "What does the CloudWatch dashboard show?": ["docs/operations.md"],
    "How are API keys stored and revoked?": ["docs/security.md"],
    "How does the chat router choose a provider?": ["docs/chat.md"],
    "How does hybrid search fuse keyword and vector results?": ["docs/search.md"],
    "Which embedding model is used and how is it built?": ["docs/embedding.md"],
    "How does the local stack emulate AWS?": ["docs/local-stack.md"],
    "What happens to a message that keeps failing?": ["docs/ingestion.md", "docs/operations.md"],
    "How does the console keep hostile documents inert?": ["docs/console.md"],
    "What is the data flow between the pipeline stages?": ["docs/architecture.md"],
}


def main() -> None:
    """Send the ratings through POST /v1/collections/docs/feedback."""
    state = json.loads((Path(__file__).resolve().parents[1] / ".stratus" / "local.json").read_text())
    url, headers = state["api_url"], {"x-api-key": state["api_key"]}
    up = down = 0
    for query, good in JUDGED.items():
        search = httpx.post(
            f"{url}/v1/collections/docs/search",
            json={"query": query, "top_k": 5},
            headers=headers,
            timeout=60,
        )
        for hit in search.json()["hits"]:
            rating = 1 if hit["source"] in good else -1
            body = {
                "target": "hit",
                "rating": rating,
                "query": query,
                "chunk_ids": [hit["chunk_id"]],
                "doc_ids": [hit["doc_id"]],
            }
            httpx.post(
                f"{url}/v1/collections/docs/feedback", json=body, headers=headers, timeout=30
            ).raise_for_status()
            up, down = up + (rating > 0), down + (rating < 0)
    print(f"feedback sent: {up} up, {down} down over {len(JUDGED)} questions")


if __name__ == "__main__":
    main()
