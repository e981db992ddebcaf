"""API keys: create, verify (hash lookup, briefly cached) and authorize a principal's role on a collection.

A key is `strk_<key_id: 12 hex>_<secret: token_urlsafe(32)>`; the table holds only its sha256. A verified
key is reused in-process for `api_key_cache_s`, so a revocation takes effect everywhere within that time
(at once in the process that revoked it). On AWS a key is also mirrored into API Gateway (same value, on
the usage plan), since the gateway requires one of its own keys; the CLI and the key routes share that.
"""

from __future__ import annotations

import hashlib
import math
import re
import secrets
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING

from stratus.errors import StratusError
from stratus.models import COLLECTION_PATTERN
from stratus.safe_text import unsafe_characters
from stratus.stores.keys import KeyRecord, KeyTable

if TYPE_CHECKING:
    from stratus.stores.gateway import GatewayKeys

KEY_PATTERN = re.compile(r"^strk_([0-9a-f]{12})_([A-Za-z0-9_-]{43})$")
ALL_COLLECTIONS = "*"
# Bounds memory when many distinct valid keys are used; entries also expire after the TTL.
_CACHE_MAX_ENTRIES = 10_000
# Per-key limits a key may be given: finite, and small enough for DynamoDB numbers and token arithmetic.
MAX_RATE_PER_S = 1_000_000.0
MAX_BURST = 1_000_000


class Role(StrEnum):
    """What a key may do; each role implies the ones before it."""

    READ = "read"
    WRITE = "write"
    ADMIN = "admin"


_RANK = {Role.READ: 1, Role.WRITE: 2, Role.ADMIN: 3}
_ROLE_NAMES = {role.value for role in Role}


class AuthError(StratusError):
    """A request that may not proceed."""


class UnauthenticatedError(AuthError):
    """No key, a malformed or unknown key, or a revoked key (HTTP 401)."""


class ForbiddenError(AuthError):
    """A valid key used beyond its collections or role (HTTP 403)."""


class GatewayMirrorError(StratusError):
    """API Gateway could not mirror a new key, or disable a revoked key's mirror (HTTP 502)."""


@dataclass(frozen=True)
class Principal:
    """The verified key behind a request."""

    key_id: str
    name: str
    collections: tuple[str, ...]
    roles: frozenset[Role]
    rate_limit_per_s: float | None = None
    rate_limit_burst: int | None = None

    def has_role(self, role: Role) -> bool:
        """True when one of the key's roles is `role` or implies it."""
        return any(_RANK[r] >= _RANK[role] for r in self.roles)

    def covers(self, collection: str) -> bool:
        """True when the key may use `collection` ("*" covers every collection)."""
        return ALL_COLLECTIONS in self.collections or collection in self.collections

    def covers_all(self, collections: Iterable[str]) -> bool:
        """True when the key may use every one of `collections` ("*" only under a "*" key)."""
        if ALL_COLLECTIONS in self.collections:
            return True
        return all(c != ALL_COLLECTIONS and c in self.collections for c in collections)


@dataclass(frozen=True)
class NewKey:
    """A freshly created key: the plaintext exists only here, once."""

    key: str
    record: KeyRecord


def hash_key(key: str) -> str:
    """The sha256 (hex) of a key, as the table stores it."""
    return hashlib.sha256(key.encode()).hexdigest()


def generate_key() -> str:
    """A new random key in the fixed format."""
    return f"strk_{secrets.token_hex(6)}_{secrets.token_urlsafe(32)}"


def key_id_of(key: str) -> str | None:
    """The key_id part of a well-formed key, else None."""
    match = KEY_PATTERN.fullmatch(key)
    return match.group(1) if match else None


def principal_of(record: KeyRecord) -> Principal:
    """The principal a stored key stands for."""
    return Principal(
        key_id=record.key_id,
        name=record.name,
        collections=tuple(record.collections),
        roles=frozenset(Role(r) for r in record.roles if r in _ROLE_NAMES),
        rate_limit_per_s=record.rate_limit_per_s,
        rate_limit_burst=record.rate_limit_burst,
    )


def create_key(
    table: KeyTable,
    name: str,
    collections: Iterable[str],
    roles: Iterable[str],
    *,
    rate_limit_per_s: float | None = None,
    rate_limit_burst: int | None = None,
    key: str | None = None,
    now: Callable[[], float] = time.time,
) -> NewKey:
    """Store a new key (or register `key`) and return its plaintext, once; ValueError if invalid."""
    collections = sorted(set(collections))
    role_names = sorted(set(roles))
    if not name.strip() or len(name) > 100:
        raise ValueError("name: 1 to 100 characters")
    if unsafe_characters(name):
        # Names are printed by `stratus keys list`: no terminal escapes, bidi overrides or other controls.
        raise ValueError("name: control, format and bidi characters are not allowed")
    if not collections:
        raise ValueError("collections: name at least one collection, or *")
    bad = [c for c in collections if c != ALL_COLLECTIONS and not COLLECTION_PATTERN.fullmatch(c)]
    if bad:
        raise ValueError(f"collections: invalid collection name {bad[0]!r}")
    unknown = [r for r in role_names if r not in _ROLE_NAMES]
    if unknown or not role_names:
        raise ValueError(f"roles: each one of {', '.join(Role)} (got {', '.join(unknown) or 'none'})")
    role_names.sort(key=lambda r: _RANK[Role(r)])
    if rate_limit_per_s is not None and not (
        math.isfinite(rate_limit_per_s) and 0 <= rate_limit_per_s <= MAX_RATE_PER_S
    ):
        raise ValueError(f"rate_limit_per_s: a finite number from 0 (unlimited) to {MAX_RATE_PER_S:g}")
    if rate_limit_burst is not None and not 1 <= rate_limit_burst <= MAX_BURST:
        raise ValueError(f"rate_limit_burst: 1 to {MAX_BURST}")
    plaintext = key or generate_key()
    key_id = key_id_of(plaintext)
    if key_id is None:
        raise ValueError("key: not of the form strk_<12 hex>_<43 url-safe characters>")
    record = KeyRecord(
        key_hash=hash_key(plaintext),
        key_id=key_id,
        name=name.strip(),
        collections=collections,
        roles=role_names,
        created_at=now(),
        rate_limit_per_s=rate_limit_per_s,
        rate_limit_burst=rate_limit_burst,
    )
    table.put(record)
    return NewKey(plaintext, record)


@dataclass(frozen=True)
class Grant:
    """What a key may hand on: the limits a new key ends up with after `check_grant`."""

    rate_limit_per_s: float | None
    rate_limit_burst: int | None


def _effective(value: float | None, default: float) -> float:
    """A key's limit: its own, else the default; 0 (unlimited) as infinity, for comparisons."""
    limit = default if value is None else value
    return math.inf if limit <= 0 else limit


def check_grant(
    principal: Principal,
    collections: Iterable[str],
    roles: Iterable[str],
    rate_limit_per_s: float | None,
    rate_limit_burst: int | None,
    default_per_s: float,
    default_burst: int,
) -> Grant:
    """Raise ForbiddenError unless the new key asks at most what `principal` has: collections, role, rate.

    Unset limits take the lesser of the server's default and the granting key's own (recorded on the
    new key when the granting key's is lower), so a limited key cannot mint a faster one by omission.
    """
    outside = [
        c for c in collections if c == ALL_COLLECTIONS and ALL_COLLECTIONS not in principal.collections
    ]
    outside += [c for c in collections if c != ALL_COLLECTIONS and not principal.covers(c)]
    if outside:
        raise ForbiddenError(f"key {principal.key_id} may not grant collection {outside[0]!r}")
    own_rank = max((_RANK[r] for r in principal.roles), default=0)
    higher = [r for r in roles if r in _ROLE_NAMES and _RANK[Role(r)] > own_rank]
    if higher:
        raise ForbiddenError(f"key {principal.key_id} may not grant role {higher[0]!r}, above its own")
    own_rate = _effective(principal.rate_limit_per_s, default_per_s)
    own_burst = _effective(principal.rate_limit_burst, default_burst)
    rate, burst = rate_limit_per_s, rate_limit_burst
    if rate is None and own_rate < _effective(None, default_per_s):
        rate = own_rate
    if burst is None and own_burst < _effective(None, default_burst):
        burst = int(own_burst)
    if _effective(rate, default_per_s) > own_rate:
        asked = "0 (unlimited)" if rate == 0 else f"{rate:g}" if rate is not None else "the default"
        raise ForbiddenError(
            f"key {principal.key_id} may not grant rate_limit_per_s {asked}: at most its own, {own_rate:g}"
        )
    if _effective(burst, default_burst) > own_burst:
        raise ForbiddenError(
            f"key {principal.key_id} may not grant rate_limit_burst {burst}: at most its own, {own_burst:g}"
        )
    return Grant(rate, burst)


def revoke_key(table: KeyTable, key_id: str, now: Callable[[], float] = time.time) -> KeyRecord | None:
    """Revoke the key with `key_id` (idempotent); the record as it now stands, or None if unknown."""
    record = table.find(key_id)
    if record is None:
        return None
    if record.revoked_at is None:
        at = now()
        table.revoke(record.key_hash, at)
        record.revoked_at = at
    return record


def mirror_key(
    table: KeyTable, created: NewKey, gateway: GatewayKeys, now: Callable[[], float] = time.time
) -> str:
    """Mirror a new key into the gateway's usage plan and record its gateway key id; return that id.

    On any failure the new key is revoked (and a half-made gateway key disabled) before
    GatewayMirrorError is raised, so no key works in the app while the gateway refuses it.
    """
    from stratus.observability import logger

    record = created.record
    gateway_id: str | None = None
    try:
        gateway_id = gateway.mirror(created.key, record.key_id, record.name)
        table.set_gateway_key_id(record.key_hash, gateway_id)
    except Exception as error:
        undone = []
        if gateway_id is not None:
            try:
                gateway.disable(gateway_id)
            except Exception:
                logger.exception("could not disable the gateway key", extra={"key_id": record.key_id})
                undone.append(f"disable its API Gateway key {gateway_id}")
        try:
            table.revoke(record.key_hash, now())
        except Exception:
            logger.exception("could not revoke the unmirrored key", extra={"key_id": record.key_id})
            undone.append(f"revoke it (`stratus keys revoke {record.key_id}`)")
        outcome = f"it could not be undone: {' and '.join(undone)}" if undone else "it was revoked"
        reason = str(error).replace(created.key, "<key>")  # the answer never carries the plaintext
        raise GatewayMirrorError(
            f"key {record.key_id} could not be added to API Gateway usage plan {gateway.usage_plan_id} "
            f"({reason}); {outcome}"
        ) from error
    record.gateway_key_id = gateway_id
    return gateway_id


def disable_mirror(record: KeyRecord, gateway: GatewayKeys) -> None:
    """Disable the API Gateway key that mirrors a revoked key, if it has one; GatewayMirrorError if not."""
    if record.gateway_key_id is None:
        return
    try:
        gateway.disable(record.gateway_key_id)
    except Exception as error:
        raise GatewayMirrorError(
            f"key {record.key_id} is revoked, but its API Gateway key {record.gateway_key_id} could not "
            f"be disabled ({error}); retry the revocation"
        ) from error


def authorize(principal: Principal, collection: str | None, role: Role) -> None:
    """Raise ForbiddenError unless the principal holds `role` on `collection` (None: no collection)."""
    if not principal.has_role(role):
        raise ForbiddenError(f"key {principal.key_id} lacks the {role.value} role")
    if collection is not None and not principal.covers(collection):
        raise ForbiddenError(f"key {principal.key_id} may not use collection {collection!r}")


class KeyVerifier:
    """Turns a presented key into a Principal by hash lookup, caching verified keys for `cache_s`."""

    def __init__(self, table: KeyTable, cache_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self._table = table
        self._cache_s = cache_s
        self._clock = clock
        self._cache: dict[str, tuple[float, Principal]] = {}
        self._lock = threading.Lock()

    def verify(self, key: str | None) -> Principal:
        """The principal of a valid, unrevoked key; UnauthenticatedError otherwise."""
        if not key:
            raise UnauthenticatedError("an API key is required (x-api-key or Authorization: Bearer)")
        if key_id_of(key) is None:
            raise UnauthenticatedError("invalid API key")
        digest = hash_key(key)
        now = self._clock()
        with self._lock:
            cached = self._cache.get(digest)
        if cached is not None and cached[0] > now:
            return cached[1]
        record = self._table.get(digest)
        if record is None or record.revoked_at is not None:
            self.forget(digest)
            raise UnauthenticatedError("invalid or revoked API key")
        principal = principal_of(record)
        if self._cache_s > 0:
            with self._lock:
                if len(self._cache) >= _CACHE_MAX_ENTRIES:
                    self._cache = {h: e for h, e in self._cache.items() if e[0] > now}
                    if len(self._cache) >= _CACHE_MAX_ENTRIES:
                        self._cache.clear()
                self._cache[digest] = (now + self._cache_s, principal)
        return principal

    def forget(self, key_hash: str) -> None:
        """Drop one key from the cache (a revocation in this process takes effect at once)."""
        with self._lock:
            self._cache.pop(key_hash, None)
