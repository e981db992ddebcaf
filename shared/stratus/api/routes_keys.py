"""Key management routes (admin keys only): create, list and revoke API keys.

Behind API Gateway, a created key is mirrored into the usage plan of the API stage serving the request
(or STRATUS_API_USAGE_PLAN_ID's), and a revoked key's gateway key is disabled; locally nothing is mirrored.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, HTTPException, Path
from pydantic import BaseModel, Field

from stratus.access.auth import MAX_BURST, MAX_RATE_PER_S, KeyVerifier, Principal, Role, principal_of
from stratus.api.deps import (
    AUTH_RESPONSES,
    AdminKey,
    Audit,
    Gateway,
    GatewayDep,
    Keys,
    Verifier,
    error_response,
)
from stratus.stores.keys import KeyRecord, KeyTable

router = APIRouter(tags=["keys"], responses=AUTH_RESPONSES)

KeyId = Annotated[str, Path(pattern=r"^[0-9a-f]{12}$", description="The key_id part of a key.")]


class KeyCreateRequest(BaseModel):
    """A key to create."""

    name: str = Field(min_length=1, max_length=100, description="Who or what uses the key.")
    collections: list[str] = Field(
        min_length=1, max_length=100, description='Collections the key may use; ["*"] for all.'
    )
    roles: list[Role] = Field(
        min_length=1, description="read, write and/or admin (each implies the ones before)."
    )
    rate_limit_per_s: float | None = Field(
        None,
        ge=0,
        le=MAX_RATE_PER_S,
        allow_inf_nan=False,
        description="Requests per second (0: unlimited), at most the creating key's own; unset: the "
        "server's default, or the creating key's rate when that is lower.",
    )
    rate_limit_burst: int | None = Field(
        None, ge=1, le=MAX_BURST, description="Burst, at most the creating key's; unset: as for the rate."
    )


class KeyInfo(BaseModel):
    """A key as listed: never the key or its hash."""

    key_id: str
    name: str
    collections: list[str]
    roles: list[str]
    created_at: float
    revoked_at: float | None = None
    rate_limit_per_s: float | None = None
    rate_limit_burst: int | None = None
    gateway_key_id: str | None = Field(
        None, description="The API Gateway key with the same value (on AWS), or null when not mirrored."
    )


class CreatedKey(KeyInfo):
    """A created key: `key` is shown this once and cannot be read back."""

    key: str


class KeyList(BaseModel):
    """The keys an admin key may manage."""

    keys: list[KeyInfo]


def _manages(principal: Principal, collections: list[str]) -> bool:
    """An admin key manages keys confined to its own collections ("*" keys manage every key)."""
    return principal.covers_all(collections)


def _is_last_admin(record: KeyRecord, records: list[KeyRecord]) -> bool:
    """True when revoking `record` would leave no other active admin key that manages its collections."""
    if record.revoked_at is not None or Role.ADMIN.value not in record.roles:
        return False
    others = (
        principal_of(r)
        for r in records
        if r.key_hash != record.key_hash and r.revoked_at is None and Role.ADMIN.value in r.roles
    )
    return not any(other.covers_all(record.collections) for other in others)


@router.post(
    "/v1/keys",
    status_code=201,
    response_model=CreatedKey,
    responses={
        403: error_response(
            "not an admin key, or a collection, role or rate beyond the admin key's own (detail says which)"
        ),
        502: error_response("API Gateway could not take the key: none was made, or it was revoked"),
    },
)
def create(
    body: KeyCreateRequest, principal: AdminKey, gateway: GatewayDep, audit: Audit, table: Keys
) -> CreatedKey:
    """Create a key (and its API Gateway key, on AWS); the response carries the plaintext key once."""
    from stratus.access.audit import key_actor

    scope = ",".join(sorted(set(body.collections)))
    with audit.audited(key_actor(principal.key_id), "key.create", "(new key)", scope) as note:
        created = _create(body, principal, gateway, table)
        note.target = created.key_id
        note.detail = (
            f"name {created.name!r}; roles {','.join(created.roles)}; "
            f"collections {','.join(created.collections)}; "
            f"rate {created.rate_limit_per_s}; burst {created.rate_limit_burst}"
        )
        return created


def _create(body: KeyCreateRequest, principal: Principal, gateway: Gateway, table: KeyTable) -> CreatedKey:
    from stratus.access.auth import (
        ForbiddenError,
        GatewayMirrorError,
        check_grant,
        create_key,
        mirror_key,
    )
    from stratus.settings import get_settings

    settings = get_settings()
    try:
        grant = check_grant(
            principal,
            body.collections,
            [r.value for r in body.roles],
            body.rate_limit_per_s,
            body.rate_limit_burst,
            settings.rate_limit_per_s,
            settings.rate_limit_burst,
        )
    except ForbiddenError as error:
        raise HTTPException(403, str(error)) from error
    try:
        # Resolved first: when the usage plan cannot be found, no key is created at all.
        mirror = gateway.mirror()
    except GatewayMirrorError as error:
        raise HTTPException(502, str(error)) from error
    try:
        created = create_key(
            table,
            body.name,
            body.collections,
            [r.value for r in body.roles],
            rate_limit_per_s=grant.rate_limit_per_s,
            rate_limit_burst=grant.rate_limit_burst,
        )
    except ValueError as error:
        raise HTTPException(422, str(error)) from error
    if mirror is not None:
        try:
            mirror_key(table, created, mirror)
        except GatewayMirrorError as error:
            raise HTTPException(502, str(error)) from error
    return CreatedKey(key=created.key, **created.record.to_public())


@router.get("/v1/keys", response_model=KeyList)
def list_keys(principal: AdminKey, table: Keys) -> KeyList:
    """Every key this admin key manages, revoked ones included."""
    records = table.list()
    return KeyList(keys=[KeyInfo(**r.to_public()) for r in records if _manages(principal, r.collections)])


@router.delete(
    "/v1/keys/{key_id}",
    response_model=KeyInfo,
    responses={
        404: error_response("no such key (or not one this admin key manages)"),
        409: error_response("the key is the last active admin key over its collections"),
        502: error_response("the key is revoked, but its API Gateway key is not disabled yet; retry"),
    },
)
def revoke(
    key_id: KeyId,
    principal: AdminKey,
    gateway: GatewayDep,
    verifier: Verifier,
    audit: Audit,
    table: Keys,
) -> KeyInfo:
    """Revoke a key and its gateway key: refused here at once, elsewhere within STRATUS_API_KEY_CACHE_S."""
    from stratus.access.audit import key_actor

    with audit.audited(key_actor(principal.key_id), "key.revoke", key_id) as note:
        revoked = _revoke(key_id, principal, gateway, verifier, table)
        note.collection = ",".join(revoked.collections)
        note.detail = f"name {revoked.name!r}; collections {','.join(revoked.collections)}"
        return revoked


def _revoke(
    key_id: str, principal: Principal, gateway: Gateway, verifier: KeyVerifier, table: KeyTable
) -> KeyInfo:
    from stratus.access.auth import GatewayMirrorError, disable_mirror, revoke_key

    records = table.list()
    record = next((r for r in records if r.key_id == key_id), None)
    if record is None or not _manages(principal, record.collections):
        raise HTTPException(404, f"key {key_id} not found")
    if _is_last_admin(record, records):
        raise HTTPException(
            409,
            f"key {key_id} is the last active admin key over {', '.join(record.collections)}: create "
            "another admin key first (or revoke it with `stratus keys revoke`, which uses AWS credentials)",
        )
    revoked = revoke_key(table, key_id)
    assert revoked is not None
    verifier.forget(revoked.key_hash)
    # Disabling needs no usage plan: only whether this runs on AWS (behind API Gateway, or configured).
    disabler = gateway.disabler()
    if disabler is not None:
        try:
            disable_mirror(revoked, disabler)
        except GatewayMirrorError as error:
            raise HTTPException(502, str(error)) from error
    return KeyInfo(**revoked.to_public())
