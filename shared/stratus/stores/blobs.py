"""S3 access behind a small class: documents in, stage outputs between stages."""

from __future__ import annotations

import gzip
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from stratus.errors import PermanentError, TransientError


@dataclass(frozen=True)
class BlobInfo:
    """What HEAD says about an object."""

    key: str
    size: int
    content_type: str | None
    metadata: Mapping[str, str] = field(default_factory=dict)  # user metadata (x-amz-meta-*)
    etag: str = ""  # without its quotes


class AccessDeniedError(TransientError):
    """S3 refused the call (403): a missing grant; retried, so a fixed grant and a redrive resume the work."""


def _is_missing(error: Exception) -> bool:
    # Only 404 means "no such key". A 403 is never read as missing: with s3:ListBucket granted (the
    # template grants it unconditionally) S3 answers a missing key with 404, so a 403 is a real refusal.
    code = getattr(error, "response", {}).get("Error", {}).get("Code", "")
    return code in {"NoSuchKey", "404", "NotFound"}


def access_denied_reason(what: str, code: str) -> str:
    """The readable reason of a 403 from S3."""
    return (
        f"S3 {what}: access denied ({code}): the role lacks s3:GetObject/PutObject on this key, or "
        "s3:ListBucket on the bucket (without it S3 answers a missing key with 403, not 404)"
    )


def _raise_classified(error: Exception, what: str) -> None:
    """Turn a botocore error into a Stratus error that says whether to retry."""
    from botocore.exceptions import BotoCoreError, ClientError

    if isinstance(error, ClientError):
        status = error.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
        code = error.response.get("Error", {}).get("Code", "")
        if status == 403 or code in {"AccessDenied", "403", "Forbidden"}:
            raise AccessDeniedError(access_denied_reason(what, code or str(status))) from error
        if status >= 500 or code in {"SlowDown", "Throttling", "RequestTimeout", "InternalError"}:
            raise TransientError(f"S3 {what}: {code or status}") from error
        raise PermanentError(f"S3 {what}: {code or status}") from error
    if isinstance(error, BotoCoreError):
        raise TransientError(f"S3 {what}: {error}") from error
    raise error


class BlobStore:
    """Reads and writes objects of one bucket."""

    def __init__(self, s3_client: Any, bucket: str) -> None:
        self._s3 = s3_client
        self.bucket = bucket

    def head(self, key: str) -> BlobInfo | None:
        """Size and type of `key`, or None when it does not exist."""
        try:
            response = self._s3.head_object(Bucket=self.bucket, Key=key)
        except Exception as error:
            if _is_missing(error):
                return None
            _raise_classified(error, f"head {key}")
            raise
        return BlobInfo(
            key,
            int(response["ContentLength"]),
            response.get("ContentType"),
            response.get("Metadata") or {},
            str(response.get("ETag", "")).strip('"'),
        )

    def get_object(self, key: str, max_bytes: int) -> tuple[BlobInfo, bytes | None] | None:
        """What HEAD would say and the bytes in one GET; the bytes are None (left unread) over `max_bytes`.

        None when the object does not exist.
        """
        try:
            response = self._s3.get_object(Bucket=self.bucket, Key=key)
            info = BlobInfo(
                key,
                int(response["ContentLength"]),
                response.get("ContentType"),
                response.get("Metadata") or {},
            )
            body = response["Body"]
            if info.size > max_bytes:
                body.close()
                return info, None
            return info, bytes(body.read())
        except Exception as error:
            if _is_missing(error):
                return None
            _raise_classified(error, f"get {key}")
            raise

    def get_bytes(self, key: str) -> bytes | None:
        """The object's bytes, or None when it does not exist."""
        try:
            response = self._s3.get_object(Bucket=self.bucket, Key=key)
            return bytes(response["Body"].read())
        except Exception as error:
            if _is_missing(error):
                return None
            _raise_classified(error, f"get {key}")
            raise

    def put_bytes(
        self,
        key: str,
        data: bytes,
        content_type: str = "application/octet-stream",
        metadata: Mapping[str, str] | None = None,
    ) -> None:
        """Write an object, with user metadata when given."""
        extra: dict[str, Any] = {"Metadata": dict(metadata)} if metadata else {}
        try:
            self._s3.put_object(Bucket=self.bucket, Key=key, Body=data, ContentType=content_type, **extra)
        except Exception as error:
            _raise_classified(error, f"put {key}")

    def list_keys(self, prefix: str) -> list[str]:
        """Every key under `prefix` (all pages)."""
        keys: list[str] = []
        try:
            for page in self._s3.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=prefix):
                keys.extend(item["Key"] for item in page.get("Contents", []))
        except Exception as error:
            _raise_classified(error, f"list {prefix}")
            raise
        return keys

    def delete(self, key: str) -> None:
        """Delete an object (no error when it is already gone)."""
        try:
            self._s3.delete_object(Bucket=self.bucket, Key=key)
        except Exception as error:
            _raise_classified(error, f"delete {key}")

    def put_json_lines_gz(self, key: str, rows: list[dict[str, Any]]) -> None:
        """Write rows as gzip-compressed JSON Lines."""
        body = "\n".join(json.dumps(row, ensure_ascii=False, separators=(",", ":")) for row in rows)
        self.put_bytes(key, gzip.compress(body.encode(), compresslevel=5), "application/x-ndjson")

    def get_json_lines_gz(self, key: str) -> list[dict[str, Any]] | None:
        """Read rows written by put_json_lines_gz, or None when the object is gone."""
        data = self.get_bytes(key)
        if data is None:
            return None
        text = gzip.decompress(data).decode()
        return [json.loads(line) for line in text.splitlines() if line]

    def presigned_put_url(self, key: str, expires_s: int, content_type: str | None = None) -> str:
        """A URL that lets a client PUT `key` directly, valid for `expires_s` seconds."""
        params: dict[str, Any] = {"Bucket": self.bucket, "Key": key}
        if content_type:
            params["ContentType"] = content_type
        url: str = self._s3.generate_presigned_url("put_object", Params=params, ExpiresIn=expires_s)
        return url
