"""Image requests: per-image model calls gathered into one answer (app.api.handlers.images)."""

from __future__ import annotations

import asyncio
import threading
from types import SimpleNamespace

import pytest
import torch

from app.api.handlers import IMAGES, Decoded, Predicted
from app.api.handlers import images as images_module
from app.api.handlers.images import ImageInputs, image_size, padded_image_size
from app.serving.admission import Deadline
from app.serving.cost_formulas import ImageBatch
from app.serving.inference import Outcome

ENTRY = SimpleNamespace(
    name="vis", version=3, labels=["a", "b", "c"], config={"patch_size": 8, "num_classes": 3}
)


class FakeRuntime:
    """Answers an image of mean m with logits (m, 2m, −m), inference m s and queue −m s; an
    image of mean below −10 fails at once, one of mean in [−10, 0) answers after 50 ms."""

    entry = ENTRY
    spec = None

    def __init__(self) -> None:
        self.calls: list[str] = []
        self.cancelled = 0

    async def classify(self, image: torch.Tensor, path: str, deadline=None) -> Outcome:
        self.calls.append(path)
        mean = float(image.mean())
        if mean < -10:
            raise ValueError("bad image")
        try:
            await asyncio.sleep(0.05 if mean < 0 else 0.0)
        except asyncio.CancelledError:
            self.cancelled += 1
            raise
        return Outcome(torch.tensor([mean, 2 * mean, -mean]), inference_s=mean, queue_s=-mean)


def test_every_image_runs_on_the_chosen_path_and_outputs_stack_in_order() -> None:
    images = torch.rand(4, 1, 8, 8, generator=torch.Generator().manual_seed(5))
    runtime = FakeRuntime()
    outcome = asyncio.run(
        IMAGES._run(
            runtime, ImageInputs(images), ImageBatch(1, 1, 1), "chunkwise", Deadline.after(5)
        )  # type: ignore[arg-type]
    )
    means = images.mean((1, 2, 3))
    torch.testing.assert_close(outcome.outputs, torch.stack([means, 2 * means, -means], 1))
    assert runtime.calls == ["chunkwise"] * 4
    assert outcome.inference_s == pytest.approx(float(means.max()))
    assert outcome.queue_s == pytest.approx(float((-means).max()))


def test_one_failing_image_cancels_the_others() -> None:
    images = torch.stack([torch.full((1, 8, 8), -20.0), torch.full((1, 8, 8), -1.0)])
    runtime = FakeRuntime()
    inputs = ImageInputs(images)

    async def run() -> int:
        with pytest.raises(ValueError, match="bad image"):
            await IMAGES._run(runtime, inputs, ImageBatch(1, 1, 1), "parallel", Deadline.after(5))  # type: ignore[arg-type]
        await asyncio.sleep(0)  # the cancellation reaches the other call; asyncio.run's own
        return runtime.cancelled  # clean-up at exit would come only after this

    assert asyncio.run(run()) == 1


@pytest.mark.parametrize(("height", "width", "rows", "cols"), [(16, 24, 2, 3), (17, 24, 3, 3)])
def test_padded_size_rounds_up_to_the_patch_grid(height: int, width: int, rows: int, cols: int):
    assert padded_image_size(ENTRY, height, width) == ImageBatch(1, rows, cols)  # type: ignore[arg-type]


def test_image_size_counts_whole_patches() -> None:
    assert image_size(ENTRY, 16, 24) == ImageBatch(1, 2, 3)  # type: ignore[arg-type]


@pytest.mark.parametrize(("top_k", "expected"), [(None, 3), (1, 1), (10, 3)])
def test_classify_answer_ranks_top_k_of_the_classes(top_k: int | None, expected: int) -> None:
    logits = torch.tensor([[0.5, 2.0, -1.0]])
    decoded = Decoded(ImageInputs(torch.zeros(1, 1, 16, 24), (30, 45)), ImageBatch(1, 2, 3))
    predicted = Predicted(logits, "parallel", queue_s=0.001, inference_s=0.002)
    answer = IMAGES.encode_v1(
        ENTRY,
        decoded,
        predicted,
        top_k=top_k,
        resize="model",
        start=0.0,  # type: ignore[arg-type]
    )
    assert [p.label for p in answer.predictions] == ["b", "a", "c"][:expected]
    assert answer.predictions[0].probability == pytest.approx(float(logits.softmax(-1)[0, 1]))
    assert (answer.image_size.height, answer.image_size.width) == (16, 24)
    assert (answer.original_size.height, answer.original_size.width) == (30, 45)
    assert (answer.path, answer.version, answer.timings.inference_ms) == ("parallel", "3", 2.0)


def test_v2_tensors_are_converted_on_the_model_thread(monkeypatch: pytest.MonkeyPatch) -> None:
    """Their tensor ops run in parallel regions: on another thread they would start a second
    OpenMP team in the process (app.serving.model_thread)."""
    threads = []

    def convert(tensor, spec, **limits):
        threads.append(threading.current_thread().name)
        return torch.zeros(2, 1, 16, 24)

    monkeypatch.setattr(images_module, "images_from_tensor", convert)
    runtime = SimpleNamespace(entry=ENTRY, spec=object())
    settings = SimpleNamespace(max_queue_size=8, max_image_pixels=10**6)
    decoded = asyncio.run(IMAGES.decode_v2(None, runtime, settings))  # type: ignore[arg-type]
    assert decoded.size == ImageBatch(1, 2, 3)
    assert len(threads) == 1 and threads[0].startswith("model")
