"""A TCP proxy on loopback that delays every byte by a fixed latency in each direction.

    with LatencyProxy(listen_port, target_port, delay=0.025) as proxy: ...

Put in front of a broker listener that is advertised at `listen_port` (LocalKafka's
`advertised_ports`), it slows down every connection of a client that bootstraps through it: Kafka
clients connect to the advertised addresses, so a proxy on the bootstrap port alone would only slow
the first metadata request. The delay is a pipe's latency, not a throttle: a chunk read at time t is
written at t + delay, whatever else is in flight (so a round trip costs 2 x delay, as on a WAN link).

It also counts the Kafka requests that pass through it, by API key (`requests`): the frames from
client to broker are a 4-byte length and a header that starts with the 2-byte key. So a test can say
how many ListOffsets or Metadata requests a client sent, not only how long it took.

It runs an asyncio loop on a daemon thread of the test process; `close()` stops it and drops every
connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from typing import Any

_CHUNK = 256 * 1024
# The Kafka API keys the tests ask about (the protocol's numbering).
PRODUCE, FETCH, LIST_OFFSETS, METADATA = 0, 1, 2, 3


class RequestCounter:
    """Splits one client-to-broker byte stream into Kafka request frames and counts them by API key."""

    def __init__(self, counts: dict[int, int]) -> None:
        self.counts = counts
        self._head = b""  # the start of a frame: its length (4 bytes) and API key (2)
        self._skip = 0  # bytes of the current frame still to pass over

    def feed(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            if self._skip:
                step = min(self._skip, len(view))
                self._skip -= step
                view = view[step:]
                continue
            need = 6 - len(self._head)
            self._head += bytes(view[:need])
            view = view[need:]
            if len(self._head) == 6:
                size = int.from_bytes(self._head[:4], "big", signed=True)
                key = int.from_bytes(self._head[4:], "big", signed=True)
                self.counts[key] = self.counts.get(key, 0) + 1
                self._skip = max(0, size - 2)
                self._head = b""


class LatencyProxy:
    def __init__(self, listen_port: int, target_port: int, delay: float, host: str = "127.0.0.1") -> None:
        self.listen_port = listen_port
        self.target_port = target_port
        self.delay = delay
        self.host = host
        self.connections = 0  # accepted so far (a check that the clients really came through it)
        self.requests: dict[int, int] = {}  # Kafka requests from clients, by API key
        self._loop = asyncio.new_event_loop()
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._thread = threading.Thread(target=self._loop.run_forever, name="latency-proxy", daemon=True)

    def start(self) -> LatencyProxy:
        self._thread.start()
        future = asyncio.run_coroutine_threadsafe(self._listen(), self._loop)
        future.result(10)
        return self

    async def _listen(self) -> None:
        self._server = await asyncio.start_server(self._accept, self.host, self.listen_port, reuse_address=True)

    async def _accept(self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            broker_reader, broker_writer = await asyncio.open_connection(self.host, self.target_port)
        except OSError:
            client_writer.close()
            return
        counter = RequestCounter(self.requests)
        for reader, writer, count in ((client_reader, broker_writer, counter), (broker_reader, client_writer, None)):
            task = asyncio.ensure_future(self._pipe(reader, writer, count))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _pipe(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, counter: RequestCounter | None
    ) -> None:
        """One direction: chunks are queued with their due time and written when it comes, in order."""
        queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()

        async def send() -> None:
            while True:
                due, data = await queue.get()
                wait = due - time.monotonic()
                if wait > 0:
                    await asyncio.sleep(wait)
                if not data:
                    break
                writer.write(data)
                await writer.drain()

        sender = asyncio.ensure_future(send())
        try:
            while True:
                data = await reader.read(_CHUNK)
                if counter is not None:
                    counter.feed(data)
                queue.put_nowait((time.monotonic() + self.delay, data))
                if not data:  # end of stream: the sender closes after the data before it
                    break
            await sender
        except (OSError, asyncio.CancelledError):
            sender.cancel()
        finally:
            with contextlib.suppress(Exception):
                writer.close()

    def count(self, api_key: int) -> int:
        """Requests of that API key sent through the proxy so far."""
        return self.requests.get(api_key, 0)

    def close(self) -> None:
        if not self._thread.is_alive():
            return

        async def shutdown() -> None:
            if self._server is not None:
                self._server.close()
            for task in list(self._tasks):
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)

        with contextlib.suppress(Exception):
            asyncio.run_coroutine_threadsafe(shutdown(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()

    def __enter__(self) -> LatencyProxy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()
