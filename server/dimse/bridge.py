"""Run the services' coroutines on the server's event loop from pynetdicom's threads."""

from __future__ import annotations

import asyncio
import concurrent.futures
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


class LoopBridge:
    """pynetdicom calls handlers in one thread per association; the index and stores live on
    the asyncio loop, so each handler hands its coroutine over and waits for the result."""

    def __init__(self, loop: asyncio.AbstractEventLoop, timeout: float = 300.0) -> None:
        self.loop = loop
        self.timeout = timeout

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        future = asyncio.run_coroutine_threadsafe(coro, self.loop)
        try:
            return future.result(self.timeout)
        except concurrent.futures.TimeoutError:
            future.cancel()
            raise
