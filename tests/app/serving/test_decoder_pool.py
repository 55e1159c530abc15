"""Decoder processes (app.serving.decoder_pool, app.serving.decoder_worker): results, errors, a dead
worker."""

from __future__ import annotations

import asyncio
import io
import json
import os
import pickle

import numpy as np
import pytest

from app.api.body_decoding import BodyError, decode_infer_request, json_nesting_depth
from app.serving.decoder_pool import DecoderFailed, DecoderPool
from app.serving.decoder_worker import read_frame, serve, write_frame


@pytest.fixture(scope="module")
def pool() -> DecoderPool:
    return DecoderPool(workers=1)


def _infer_body(values: list[float]) -> bytes:
    tensor = {"name": "x", "shape": [len(values)], "datatype": "FP32", "data": values}
    return json.dumps({"inputs": [tensor]}).encode()


def test_a_worker_returns_the_decoded_request(pool: DecoderPool) -> None:
    decoded = asyncio.run(pool.run(decode_infer_request, _infer_body([0.25, 0.5])))
    np.testing.assert_array_equal(decoded.inputs[0].values, np.array([0.25, 0.5], np.float32))


def test_errors_about_the_request_are_raised_here(pool: DecoderPool) -> None:
    with pytest.raises(BodyError) as err:
        asyncio.run(pool.run(decode_infer_request, b"[1, 2"))
    assert err.value.status_code == 400 and "not valid JSON" in err.value.message


def test_a_dead_worker_fails_its_call_and_is_replaced(pool: DecoderPool) -> None:
    body = _infer_body([1.0])
    asyncio.run(pool.run(decode_infer_request, body))  # a worker is now idle
    (worker,) = pool._idle
    worker.process.kill()
    worker.process.wait()  # dead before the call: writing to it fails
    with pytest.raises(DecoderFailed, match="decoder process failed on this request"):
        asyncio.run(pool.run(decode_infer_request, body))
    assert asyncio.run(pool.run(decode_infer_request, body)).inputs[0].values.tolist() == [1.0]


def _serve_one(function: object, *args: object) -> tuple[str, object]:
    calls, results = io.BytesIO(), io.BytesIO()
    write_frame(calls, pickle.dumps((function, args)))
    calls.seek(0)
    serve(calls, results)
    results.seek(0)
    return pickle.loads(read_frame(results) or b"")


def test_the_worker_runs_only_decoding_functions() -> None:
    assert _serve_one(json_nesting_depth, b"[[]]") == ("ok", 2)
    status, detail = _serve_one(os.getpid)
    assert status == "failed" and "refusing to run" in str(detail)
