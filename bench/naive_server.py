"""The naive baseline of ``bench/bench_server.py``: one image model behind a minimal HTTP
endpoint that runs every request alone (batch of one, no queue, no batching).

``POST /v1/models/{name}/classify`` (raw image body) decodes and preprocesses the image, runs
the model on it and answers the top classes as JSON; ``GET /ready`` answers 200. The model is
loaded exactly as ``plstm serve`` loads it (:class:`app.serving.repository.ModelRepository`:
``load_checkpoint``, sha256 check, warm-up) and run by the same call
(:func:`app.serving.backends.run_images`, which holds the model's lock, so model calls never
overlap); decoding uses the server's :func:`app.serving.images.load_image`. Only the dynamic
batcher, the API layer (FastAPI, validation, metrics, errors) and the response schema are missing.
Usage: python3 bench/naive_server.py --repository DIR --name MODEL --port PORT [--device auto]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import anyio.to_thread
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

_ROOT = Path(__file__).resolve().parent.parent
if str(_ROOT) not in sys.path:  # run as a script from a checkout without `pip install -e .`
    sys.path.insert(0, str(_ROOT))

from app.serving import backends  # noqa: E402
from app.serving.images import ImageSpec, load_image  # noqa: E402
from app.serving.repository import ModelEntry, ModelRepository  # noqa: E402

TOP_K = 5


def classify_one(entry: ModelEntry, spec: ImageSpec, data: bytes, path: str) -> dict:
    """Decode → preprocess → model (batch of one) → top classes, for one image."""
    image = load_image(data, spec).tensor
    logits = backends.run_images(entry, image[None], path)[0]
    values, indices = logits.softmax(-1).topk(min(TOP_K, logits.numel()))
    labels = entry.labels if len(entry.labels) == logits.numel() else None
    return {
        "model": entry.name,
        "path": path,
        "predictions": [
            {"label": labels[i] if labels else str(i), "index": i, "probability": p}
            for p, i in zip(values.tolist(), indices.tolist(), strict=True)
        ],
    }


def create_naive_app(repository: Path, name: str, device: str) -> Starlette:
    """Load model ``name`` (its latest version) from ``repository`` and return the app."""
    models = ModelRepository(repository, device)
    models.load_all()
    entry = models.get(name)
    if not entry.ready:
        raise SystemExit(f"model {name!r} is not ready: {entry.reason}")
    spec = ImageSpec.from_metadata(entry.input_spec, entry.preprocessing, entry.config)

    async def classify(request: Request) -> JSONResponse:
        if request.path_params["name"] != name:
            return JSONResponse({"error": f"model {request.path_params['name']!r} not found"}, 404)
        path = request.query_params.get("path", "parallel")
        data = await request.body()
        try:
            answer = await anyio.to_thread.run_sync(classify_one, entry, spec, data, path)
        except ValueError as exc:
            return JSONResponse({"error": str(exc)}, 400)
        return JSONResponse(answer)

    async def ready(request: Request) -> JSONResponse:
        return JSONResponse({"ready": True})

    routes = [
        Route("/v1/models/{name}/classify", classify, methods=["POST"]),
        Route("/ready", ready, methods=["GET"]),
    ]
    return Starlette(routes=routes)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repository", type=Path, required=True, help="model repository")
    parser.add_argument("--name", required=True, help="model to serve")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    args = parser.parse_args(argv)
    app = create_naive_app(args.repository, args.name, args.device)
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning", access_log=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
