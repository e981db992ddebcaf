"""Server-Sent Events over a synchronous generator that is closed when the response ends for any reason.

Starlette iterates a sync body in a worker thread and, when the client goes away, stops asking for the
next item but never closes the generator: the provider's HTTP stream kept running (and billing tokens)
until the answer was complete. Closing the generator raises GeneratorExit at its `yield`, which unwinds
the chat service and the provider's `with httpx.stream(...)`, closing the connection to the provider.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable, Generator, Iterator
from typing import Any

import anyio
from fastapi.responses import StreamingResponse
from starlette.types import Receive, Scope, Send

_DONE = object()


def sse_events(
    named: Iterator[tuple[str, dict[str, Any]]], render: Callable[[str, dict[str, Any]], str]
) -> Generator[str, None, None]:
    """The rendered events of `named`, closing it when this generator is closed."""
    try:
        for name, data in named:
            yield render(name, data)
    finally:
        close = getattr(named, "close", None)
        if close is not None:
            close()


class ClosingEventStream(StreamingResponse):
    """text/event-stream over a sync generator, run off the event loop, closed once the response ends."""

    def __init__(self, events: Iterator[str], headers: dict[str, str] | None = None) -> None:
        self._events = events
        super().__init__(self._iterate(), media_type="text/event-stream", headers=headers)

    async def _iterate(self) -> AsyncIterator[str]:
        while True:
            item = await anyio.to_thread.run_sync(next, self._events, _DONE)
            if not isinstance(item, str):
                return
            yield item

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Send the stream; whatever ends it (the last event, a disconnect, an error), close the generator."""
        try:
            await super().__call__(scope, receive, send)
        finally:
            with anyio.CancelScope(shield=True):
                await anyio.to_thread.run_sync(self._close)

    def _close(self) -> None:
        close = getattr(self._events, "close", None)
        if close is None:
            return
        with contextlib.suppress(ValueError):  # still running in a worker thread: ends at its next yield
            close()
