"""The AWS emulator: moto's application on loopback, with its per-request overheads made constant.

moto answers S3, SQS and DynamoDB exactly as it does out of the box; two of its internals cost
time that grows with nothing the caller does, and are replaced here by equivalents:

- it routes every request by listing its own package folder (about 200 `isdir` calls): the
  listing is taken once;
- its clock builds `datetime` objects and subtracts the epoch, and SQS reads it for every message
  of a queue on every call (visible? delayed? the queue's attributes on each send): `time.time()`
  gives the same seconds.

`python -m stratus.local.emulator PORT` serves it with waitress (a fixed pool of threads that
keeps connections alive, where moto's own server opens a thread and a connection per request)
and exits when its parent process is gone, even one killed without a chance to stop it.
"""

from __future__ import annotations

import functools
import os
import sys
import threading
import time
from typing import Any

HOST = "127.0.0.1"
# Long polls hold a thread each for up to their wait: room for every poller, the API and uploads.
SERVER_THREADS = 32


def _unix_time(original: Any, dt: Any = None) -> float:
    return time.time() if dt is None else float(original(dt))


def _unix_time_millis(original: Any, dt: Any = None) -> float:
    return time.time() * 1000.0 if dt is None else float(original(dt))


def tune_moto() -> None:
    """Replace moto's folder listing and clock by constant-time equivalents (idempotent)."""
    from moto import backends
    from moto.core import utils
    from moto.sqs import models as sqs_models

    if getattr(backends, "_stratus_tuned", False):
        return
    modules = tuple(backends.list_of_moto_modules())
    backends.list_of_moto_modules = lambda: modules
    unix_time = functools.partial(_unix_time, utils.unix_time)
    unix_time_millis = functools.partial(_unix_time_millis, utils.unix_time_millis)
    for module in (utils, sqs_models):
        module.unix_time = unix_time  # type: ignore[attr-defined]
        module.unix_time_millis = unix_time_millis  # type: ignore[attr-defined]
    _serialise_dynamodb_writes()
    backends._stratus_tuned = True  # type: ignore[attr-defined]


def _serialise_dynamodb_writes() -> None:
    """moto's TransactWriteItems deep-copies the tables it touches: a concurrent write to one of them
    ("dictionary changed size during iteration") fails it. DynamoDB itself has no such race; serialise
    the emulator's writes (sources' syncs write transactions from the API and the pollers at once)."""
    from moto.dynamodb.models import DynamoDBBackend

    lock = threading.RLock()

    def serialised(method: Any) -> Any:
        @functools.wraps(method)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            with lock:
                return method(*args, **kwargs)

        return wrapper

    for name in ("transact_write_items", "put_item", "update_item", "delete_item", "batch_write_item"):
        setattr(DynamoDBBackend, name, serialised(getattr(DynamoDBBackend, name)))


def make_app() -> Any:
    """moto's WSGI application (every service, routed by the request), tuned."""
    from moto.moto_server.werkzeug_app import DomainDispatcherApplication, create_backend_app

    tune_moto()
    return DomainDispatcherApplication(create_backend_app)


def serve(port: int, host: str = HOST) -> None:
    """Serve the emulator until the process ends."""
    import waitress

    waitress.serve(make_app(), host=host, port=port, threads=SERVER_THREADS, _quiet=True)


def _exit_with_parent(parent: int) -> None:
    while os.getppid() == parent:
        time.sleep(1)
    os._exit(0)


def main(argv: list[str] | None = None) -> None:
    """Entry point of the emulator's child process: `python -m stratus.local.emulator PORT`."""
    args = sys.argv[1:] if argv is None else argv
    threading.Thread(target=_exit_with_parent, args=(os.getppid(),), daemon=True).start()
    serve(int(args[0]))


if __name__ == "__main__":
    main()
