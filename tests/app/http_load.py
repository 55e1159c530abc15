"""Load for the overload and soak tests: a lean keep-alive HTTP/1.1 client on asyncio streams
(httpx costs more CPU per request than a small server answer, which would make the client the
bottleneck), closed-loop clients, and an open loop that sends at a fixed rate whatever the
answers are."""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass


@dataclass(frozen=True)
class Request:
    method: str
    target: str
    body: bytes = b""
    headers: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class Answer:
    status: int
    latency: float
    headers: dict[str, str]
    body: bytes


class Connection:
    """One keep-alive connection to ``host:port``; reconnects when the server closes it.

    A kept-alive connection that the server closed while it was idle (its keep-alive timeout)
    is replaced before a request is sent on it; and when the close crosses the request on the
    wire (no byte of an answer, or a reset), the request is sent once more on a new
    connection, as HTTP clients do: the server never read it."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    async def send(self, request: Request) -> Answer:
        if self._reader is not None and self._reader.at_eof():
            await self.close()
        if self._writer is None:
            return await self._exchange(request)
        try:
            return await self._exchange(request)
        except (asyncio.IncompleteReadError, ConnectionResetError) as exc:
            if isinstance(exc, asyncio.IncompleteReadError) and exc.partial:
                raise
            return await self._exchange(request)

    async def _exchange(self, request: Request) -> Answer:
        if self._writer is None:
            self._reader, self._writer = await asyncio.open_connection(self.host, self.port)
        assert self._reader is not None
        lines = [f"{request.method} {request.target} HTTP/1.1", f"host: {self.host}"]
        lines += [f"{k}: {v}" for k, v in request.headers]
        lines.append(f"content-length: {len(request.body)}")
        start = time.perf_counter()
        try:
            self._writer.write(("\r\n".join(lines) + "\r\n\r\n").encode() + request.body)
            head = (await self._reader.readuntil(b"\r\n\r\n")).decode("latin-1").split("\r\n")
            headers = {
                k.strip().lower(): v.strip()
                for k, v in (line.split(":", 1) for line in head[1:] if ":" in line)
            }
            body = await self._reader.readexactly(int(headers.get("content-length", "0")))
        except BaseException:
            await self.close()
            raise
        if headers.get("connection", "").lower() == "close":
            await self.close()
        return Answer(int(head[0].split()[1]), time.perf_counter() - start, headers, body)

    async def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            with contextlib.suppress(OSError):
                await self._writer.wait_closed()
        self._reader = self._writer = None


async def closed_loop(
    host: str, port: int, requests: list[Request], clients: int, seconds: float
) -> list[Answer]:
    """``clients`` connections, each sending the next of ``requests`` (in turn) as soon as its
    previous answer arrived, for ``seconds``."""
    answers: list[Answer] = []
    end = time.perf_counter() + seconds

    async def client(first: int) -> None:
        connection = Connection(host, port)
        i = first
        try:
            while time.perf_counter() < end:
                answers.append(await connection.send(requests[i % len(requests)]))
                i += clients
        finally:
            await connection.close()

    await asyncio.gather(*(client(c) for c in range(clients)))
    return answers


async def open_loop(
    host: str, port: int, request: Request, rate: float, seconds: float
) -> list[Answer]:
    """Send ``request`` ``rate`` times per second for ``seconds`` (request i at i / rate), each
    on an idle connection or a new one; every answer, in the order they were sent."""
    idle: list[Connection] = []
    opened: list[Connection] = []

    async def one() -> Answer:
        connection = idle.pop() if idle else Connection(host, port)
        if connection not in opened:
            opened.append(connection)
        answer = await connection.send(request)
        idle.append(connection)
        return answer

    start = time.perf_counter()
    tasks = []
    for i in range(int(rate * seconds)):
        delay = start + i / rate - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one()))
    answers = await asyncio.gather(*tasks)
    for connection in opened:
        await connection.close()
    return list(answers)


def percentile(values: list[float], q: float) -> float:
    """The ``q``-quantile (0..1) of ``values``, nearest rank."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * len(ordered)) - 1))]
