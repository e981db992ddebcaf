"""Sources: web sites and S3 prefixes kept in sync with a collection, one sync job at a time."""

MESSAGE_TAG = "stratus_sync"


def is_sync_message(body: str) -> bool:
    """Whether a fetch-queue body is a sync unit (not an S3 notification); imports nothing heavy."""
    return f'"{MESSAGE_TAG}"' in body[:64]
