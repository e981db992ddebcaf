"""API key format, role and collection rules, and token-bucket arithmetic (no AWS)."""

from __future__ import annotations

import hashlib
import re

import pytest

from stratus.access.auth import (
    ForbiddenError,
    Principal,
    Role,
    authorize,
    generate_key,
    hash_key,
    key_id_of,
)
from stratus.access.ratelimit import Limit, MemoryBuckets, RateLimiter


class Clock:
    """A clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def principal(roles: set[Role], collections: tuple[str, ...] = ("docs",)) -> Principal:
    return Principal(key_id="0123456789ab", name="t", collections=collections, roles=frozenset(roles))


def test_generated_keys_have_the_fixed_format_and_are_hashed_with_sha256() -> None:
    # given two new keys
    first, second = generate_key(), generate_key()

    # then each is strk_<12 lowercase hex>_<token_urlsafe(32)>, and they differ
    for key in (first, second):
        assert re.fullmatch(r"strk_[0-9a-f]{12}_[A-Za-z0-9_-]{43}", key)
        assert key_id_of(key) == key[5:17]
        assert hash_key(key) == hashlib.sha256(key.encode()).hexdigest()
    assert first != second
    # and anything else is not a key
    for bad in ("", "strk_", "strk_0123456789AB_" + "a" * 43, "sk-" + "a" * 40, first + "x", first[:-1]):
        assert key_id_of(bad) is None


@pytest.mark.parametrize(
    ("roles", "allowed"),
    [
        ({Role.READ}, {Role.READ}),
        ({Role.WRITE}, {Role.READ, Role.WRITE}),
        ({Role.ADMIN}, {Role.READ, Role.WRITE, Role.ADMIN}),
        ({Role.READ, Role.WRITE}, {Role.READ, Role.WRITE}),
    ],
)
def test_admin_implies_write_implies_read(roles: set[Role], allowed: set[Role]) -> None:
    # given a key with `roles` on collection docs
    key = principal(roles)

    # then exactly the implied roles are authorized there
    for role in Role:
        if role in allowed:
            authorize(key, "docs", role)
        else:
            with pytest.raises(ForbiddenError, match=role.value):
                authorize(key, "docs", role)


def test_a_key_is_confined_to_its_collections_unless_it_has_the_star() -> None:
    # given a key on docs only and one on every collection
    docs_only = principal({Role.ADMIN}, ("docs",))
    everything = principal({Role.READ}, ("*",))

    # then the first is refused elsewhere, the second is not
    with pytest.raises(ForbiddenError, match="'other'"):
        authorize(docs_only, "other", Role.READ)
    authorize(everything, "other", Role.READ)
    # and only a * key covers * (an admin of docs may not hand out keys for every collection)
    assert not docs_only.covers_all(["*"])
    assert not docs_only.covers_all(["docs", "other"])
    assert docs_only.covers_all(["docs"])
    assert everything.covers_all(["*", "other"])


def test_bucket_allows_the_burst_then_refuses_with_the_wait_then_refills() -> None:
    # given a bucket of 3 refilling at 2 tokens a second
    clock = Clock()
    limiter = RateLimiter(MemoryBuckets(clock), Limit(per_s=2, burst=3))

    # when 4 requests arrive at once
    waits = [limiter.check("k") for _ in range(4)]

    # then 3 pass and the 4th must wait half a second for the next token
    assert waits[:3] == [0, 0, 0]
    assert waits[3] == pytest.approx(0.5)
    # and after that half second one more passes, but not two
    clock.now += 0.5
    assert limiter.check("k") == 0
    assert limiter.check("k") == pytest.approx(0.5)
    # and a long pause refills only up to the burst
    clock.now += 60
    assert [limiter.check("k") for _ in range(4)][-1] > 0


def test_per_key_overrides_replace_the_defaults_and_zero_is_unlimited() -> None:
    # given default limits of 1/s burst 1
    limiter = RateLimiter(MemoryBuckets(Clock()), Limit(per_s=1, burst=1))

    # then a key without overrides gets one request, a key with burst 5 gets five, an unlimited key any
    assert [limiter.check("a") == 0 for _ in range(2)] == [True, False]
    assert [limiter.check("b", None, 5) == 0 for _ in range(6)] == [True] * 5 + [False]
    assert all(limiter.check("c", 0, None) == 0 for _ in range(100))
    # and buckets are per key: a's exhaustion never touched b's
    assert limiter.limit_for(None, 5) == Limit(1, 5)
