"""InferenceGraphs: replayed forwards equal eager ones for every batch size of a bucket (padding
rows do not leak into real rows), graphs are cached per bucket / shape / key and evicted
oldest first, and ineligible inputs run eagerly."""

from __future__ import annotations

import pytest
import torch

from app.serving.cuda_graphs import InferenceGraphs
from models import create_model

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def _model(device: str) -> torch.nn.Module:
    torch.manual_seed(0)
    model = create_model(
        "plstm_vis_t",
        img_size=32,
        patch_size=8,
        in_chans=1,
        num_classes=3,
        dim=32,
        depth=2,
        num_heads=2,
    )
    return model.to(device).eval()


def test_cpu_and_oversized_inputs_run_eagerly() -> None:
    model = _model("cpu")
    graphs = InferenceGraphs(max_batch=4)
    x = torch.randn(3, 1, 32, 32)
    with torch.inference_mode():
        assert torch.equal(graphs(model, x, tokens=16, key="parallel"), model(x))
    assert graphs.captures == 0
    assert not graphs.eligible(x, tokens=2048)
    with pytest.raises(ValueError):
        InferenceGraphs(max_batch=0)


@cuda
def test_replay_matches_eager_for_every_batch_size() -> None:
    model = _model("cuda")
    graphs = InferenceGraphs(max_batch=8)
    gen = torch.Generator(device="cuda").manual_seed(2)
    with torch.inference_mode():
        for n in (1, 2, 3, 5, 8, 3):
            x = torch.randn(n, 1, 32, 32, device="cuda", generator=gen)
            out = graphs(model, x, tokens=16, key="parallel")
            ref = model(x)
            assert out.shape == ref.shape
            assert (out - ref).abs().max() <= 1e-4 * ref.abs().max()
        # buckets 1, 2, 4, 8 (3 and 5 reuse 4 and 8)
        assert graphs.captures == 4
        x = torch.randn(2, 1, 64, 32, device="cuda", generator=gen)  # another shape
        assert torch.allclose(graphs(model, x, tokens=32, key="parallel"), model(x), atol=1e-4)
        assert graphs.captures == 5
        big = torch.randn(9, 1, 32, 32, device="cuda", generator=gen)  # above max_batch
        assert torch.allclose(graphs(model, big, tokens=16, key="parallel"), model(big), atol=1e-4)
        assert graphs.captures == 5


@cuda
def test_eviction_keeps_at_most_max_graphs() -> None:
    model = _model("cuda")
    graphs = InferenceGraphs(max_batch=4, max_graphs=2)
    x = torch.randn(1, 1, 32, 32, device="cuda")
    with torch.inference_mode():
        for key in ("a", "b", "c", "a"):
            graphs(model, x, tokens=16, key=key)
    assert graphs.captures == 4  # "a" was evicted by "c" and captured again
    assert len(graphs) == 2
