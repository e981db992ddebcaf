"""`stratus keys create|list|revoke`: manage API keys in the keys table directly (AWS credentials).

This is how the first admin key is made on AWS. With STRATUS_API_USAGE_PLAN_ID set, `create` also
creates an API Gateway key with the same value on that usage plan (API Gateway requires one), and
`revoke` disables it (the same functions as the key routes: `stratus.access.auth.mirror_key` and
`disable_mirror`).
"""

from __future__ import annotations

import argparse
import json
import sys

from stratus.access.audit import cli_actor
from stratus.access.auth import ALL_COLLECTIONS, Role
from stratus_tools.display import plain


def create(args: argparse.Namespace) -> int:
    """Create a key and print it once."""
    from stratus import services
    from stratus.access.auth import GatewayMirrorError, create_key, mirror_key

    audit = services.audit_log()
    table = services.key_table()
    gateway = services.gateway_keys()
    try:
        created = create_key(
            table,
            args.name,
            args.collection or [ALL_COLLECTIONS],
            args.role or [Role.READ.value],
            rate_limit_per_s=args.rate_limit_per_s,
            rate_limit_burst=args.rate_limit_burst,
        )
    except ValueError as error:
        audit.record(cli_actor(), "key.create", "(new key)", "refused", detail=str(error))
        print(f"error: {plain(error)}", file=sys.stderr)
        return 2
    if gateway is not None:
        try:
            mirror_key(table, created, gateway)
        except GatewayMirrorError as error:
            audit.record(cli_actor(), "key.create", created.record.key_id, "failed", detail=str(error))
            print(f"error: {plain(error)}", file=sys.stderr)
            return 1
    public = created.record.to_public()
    audit.record(
        cli_actor(),
        "key.create",
        public["key_id"],
        "success",
        collection=",".join(public["collections"]),
        detail=f"name {public['name']!r}; roles {','.join(public['roles'])}",
    )
    if args.json:
        print(json.dumps({**public, "key": created.key}, indent=2))
    else:
        print(
            f"key_id {public['key_id']}  roles {','.join(public['roles'])}  collections "
            f"{','.join(public['collections'])}"
        )
        print("the key (shown once; store it now):")
        print(created.key)
    return 0


def list_keys(args: argparse.Namespace) -> int:
    """Print every key (never a key's value or hash)."""
    from stratus import services

    records = [r.to_public() for r in services.key_table().list()]
    if args.json:
        print(json.dumps(records, indent=2))
        return 0
    for r in records:
        state = "revoked" if r["revoked_at"] is not None else "active"
        roles, collections = ",".join(r["roles"]), ",".join(r["collections"])
        # Names were chosen by whoever made the key: shown with control characters neutralised.
        print(plain(f"{r['key_id']}  {state:7}  {roles:16}  {collections:24}  {r['name']}"))
    return 0


def revoke(args: argparse.Namespace) -> int:
    """Revoke a key by key_id (and disable its API Gateway key)."""
    from stratus import services
    from stratus.access.auth import GatewayMirrorError, disable_mirror, revoke_key

    audit = services.audit_log()
    revoked = revoke_key(services.key_table(), args.key_id)
    if revoked is None:
        audit.record(cli_actor(), "key.revoke", args.key_id, "refused", detail="no such key")
        print(f"error: no key {plain(args.key_id)}", file=sys.stderr)
        return 1
    gateway = services.gateway_keys()
    if gateway is not None:
        try:
            disable_mirror(revoked, gateway)
        except GatewayMirrorError as error:
            audit.record(cli_actor(), "key.revoke", revoked.key_id, "failed", detail=str(error))
            print(f"error: {plain(error)}", file=sys.stderr)
            return 1
    audit.record(cli_actor(), "key.revoke", revoked.key_id, "success", detail=f"name {revoked.name!r}")
    print(
        f"revoked {revoked.key_id} ({plain(revoked.name)}); "
        "API instances drop it within STRATUS_API_KEY_CACHE_S"
    )
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The parser of `stratus keys`."""
    parser = argparse.ArgumentParser(prog="stratus keys", description=__doc__)
    sub = parser.add_subparsers(dest="action", required=True)
    new = sub.add_parser("create", help="create a key and print it once")
    new.add_argument("--name", required=True, help="who or what uses the key")
    new.add_argument(
        "--collection", "-c", action="append", help="a collection it may use (repeat; default: * = all)"
    )
    new.add_argument(
        "--role", "-r", action="append", choices=[r.value for r in Role], help="repeat; default read"
    )
    new.add_argument("--rate-limit-per-s", type=float, default=None, help="requests/s (0: unlimited)")
    new.add_argument("--rate-limit-burst", type=int, default=None, help="burst size")
    new.add_argument("--json", action="store_true")
    new.set_defaults(func=create)
    listing = sub.add_parser("list", help="list keys (id, name, collections, roles, created, revoked)")
    listing.add_argument("--json", action="store_true")
    listing.set_defaults(func=list_keys)
    gone = sub.add_parser("revoke", help="revoke a key by its key_id")
    gone.add_argument("key_id")
    gone.set_defaults(func=revoke)
    return parser


def main(argv: list[str]) -> int:
    """Entry point of `stratus keys`."""
    args = build_parser().parse_args(argv)
    result: int = args.func(args)
    return result
