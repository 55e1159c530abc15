"""Engine messages: frames round-trip tensors exactly, malformed frames are refused, and every
batcher / model exception comes back as the same HTTP answer."""

from __future__ import annotations

import asyncio
import socket

import httpx
import pytest
import torch
from fastapi import FastAPI

from app.api.error_handlers import install_error_handlers
from app.core.errors import ApiError
from app.engine.protocol import (
    ALIGN,
    CLASSIFY,
    ERROR,
    RESULT,
    EngineInternalError,
    decode,
    encode,
    error_from_meta,
    error_meta,
    graph_tensors,
    graphs_from_tensors,
    read_message,
)
from app.serving.batching import QueueFull, RequestTimeout, ShuttingDown
from app.serving.inference import InferenceFailed
from models.molecule_features import MolGraph


def _random(gen: torch.Generator, dtype: torch.dtype, shape: tuple[int, ...]) -> torch.Tensor:
    if dtype == torch.bool:
        return torch.rand(shape, generator=gen) > 0.5
    if dtype.is_floating_point:
        return torch.randn(shape, generator=gen).to(dtype)
    return torch.randint(-100 if dtype.is_signed else 0, 100, shape, generator=gen, dtype=dtype)


def _body(frame: bytes) -> bytearray:
    assert int.from_bytes(frame[:4], "big") == len(frame) - 4
    return bytearray(frame[4:])


def test_tensors_round_trip_exactly() -> None:
    gen = torch.Generator().manual_seed(0)
    cases = [
        (torch.float32, (1, 96, 96)),
        (torch.float16, (3, 5)),
        (torch.bfloat16, (7,)),
        (torch.float64, (2, 3, 1)),
        (torch.int64, (2, 9)),
        (torch.int32, (5,)),
        (torch.int16, (3,)),
        (torch.int8, (4, 1)),
        (torch.uint8, (3, 3, 3)),
        (torch.bool, (6,)),
        (torch.float32, ()),
        (torch.float32, (0, 4)),
    ]
    tensors = [_random(gen, dtype, shape) for dtype, shape in cases]
    tensors.append(torch.randn(4, 6, generator=gen).t())  # not contiguous
    meta = {"m": "vis", "v": 3, "p": "parallel", "nested": [1.5, None, "é"]}
    msg = decode(_body(encode(CLASSIFY, 2**40 + 7, meta, tensors)))
    assert (msg.kind, msg.rid, msg.meta) == (CLASSIFY, 2**40 + 7, meta)
    assert len(msg.tensors) == len(tensors)
    for got, sent in zip(msg.tensors, tensors, strict=True):
        assert got.dtype == sent.dtype and got.shape == sent.shape
        assert torch.equal(got, sent)
        if got.numel():
            assert got.data_ptr() % ALIGN == 0
    msg.tensors[0].add_(1)  # decoded tensors are writable views


def test_graphs_round_trip() -> None:
    gen = torch.Generator().manual_seed(1)
    graphs = []
    for n in (3, 1, 6):
        edges = torch.stack([torch.arange(n - 1), torch.arange(1, n)])
        graphs.append(
            MolGraph(torch.rand(n, 5, generator=gen), edges, torch.rand(n - 1, 2, generator=gen))
        )
    msg = decode(_body(encode(RESULT, 1, {}, graph_tensors(graphs))))
    back = graphs_from_tensors(msg.tensors)
    assert len(back) == len(graphs)
    for a, b in zip(back, graphs, strict=True):
        assert torch.equal(a.x, b.x) and torch.equal(a.edge_index, b.edge_index)
        assert torch.equal(a.edge_attr, b.edge_attr)
    with pytest.raises(ValueError, match="three tensors per graph"):
        graphs_from_tensors(msg.tensors[:4])


def test_malformed_frames_are_refused() -> None:
    frame = encode(CLASSIFY, 1, {"m": "x"}, [torch.arange(10, dtype=torch.float32)])
    with pytest.raises(ValueError, match="ends inside a tensor"):
        decode(_body(frame)[:-16])
    with pytest.raises(ValueError, match="trailing bytes"):
        decode(_body(frame) + bytearray(8))
    with pytest.raises(ValueError, match="shorter than its header"):
        decode(bytearray(5))
    bad_kind = bytearray(_body(frame))
    bad_kind[0] = 99
    with pytest.raises(ValueError, match="malformed frame header"):
        decode(bad_kind)
    bad_dtype = bytearray(_body(frame).replace(b'"float32"', b'"complex"'))
    with pytest.raises(ValueError, match="bad tensor spec"):
        decode(bad_dtype)
    with pytest.raises(ValueError, match="cannot be sent"):
        encode(CLASSIFY, 1, {}, [torch.zeros(2, dtype=torch.complex64)])
    with pytest.raises(ValueError, match="unknown message kind"):
        encode(42, 1)


def test_read_message_over_a_socket() -> None:
    gen = torch.Generator().manual_seed(2)
    sent = [torch.rand(1, 96, 96, generator=gen), torch.randint(0, 9, (3, 2), generator=gen)]

    async def main() -> None:
        left, right = socket.socketpair(socket.AF_UNIX)
        reader, left_writer = await asyncio.open_unix_connection(sock=left)
        _right_reader, writer = await asyncio.open_unix_connection(sock=right)
        frames = [encode(CLASSIFY, i, {"i": i}, sent) for i in range(3)]
        writer.write(b"".join(frames)[:1000])  # split anywhere: reads wait for whole frames
        await asyncio.sleep(0)
        writer.write(b"".join(frames)[1000:])
        await writer.drain()
        for i in range(3):
            msg = await read_message(reader)
            assert msg.meta == {"i": i}
            assert all(torch.equal(a, b) for a, b in zip(msg.tensors, sent, strict=True))
        writer.close()
        with pytest.raises(asyncio.IncompleteReadError):
            await read_message(reader)
        left_writer.close()

    asyncio.run(main())


ERRORS = [
    QueueFull("queue of model 'vis' is full (2)"),
    ShuttingDown("the server is shutting down"),
    RequestTimeout("no result within 1.5 s"),
    InferenceFailed(ValueError("images must be a float tensor")),
    InferenceFailed(RuntimeError("CUDA error")),
    ApiError(503, "model 'vis' version 2 is unavailable", {"Retry-After": "1"}),
    KeyError("oops"),
]


def _answers(exceptions: list[Exception]) -> list[tuple[int, dict, str | None]]:
    """(status, body, Retry-After) the app's error handlers give each exception."""
    app = FastAPI()
    install_error_handlers(app)

    @app.get("/{i}")
    async def fail(i: int) -> None:
        raise exceptions[i]

    async def main() -> list[tuple[int, dict, str | None]]:
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            out = []
            for i in range(len(exceptions)):
                r = await client.get(f"/{i}")
                out.append((r.status_code, r.json(), r.headers.get("retry-after")))
            return out

    return asyncio.run(main())


def test_errors_come_back_as_the_same_http_answer() -> None:
    remote = [error_from_meta(decode(_body(encode(ERROR, 1, error_meta(e)))).meta) for e in ERRORS]
    assert type(remote[-1]) is EngineInternalError and "KeyError" in str(remote[-1])
    inline, through_engine = _answers(ERRORS), _answers(remote)
    assert through_engine == inline
    assert [status for status, _, _ in inline] == [503, 503, 504, 422, 500, 503, 500]
