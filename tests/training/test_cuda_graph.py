"""GraphedTraining: replayed forward + backward equal the eager ones (outputs and every
parameter's gradient) on fresh random inputs; other shapes and eval mode run eagerly; the
Trainer only uses graphs where they can run."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch.utils.data import TensorDataset

from models import create_model
from training.cuda_graph import GraphedTraining
from training.loop import RunSpec, TrainConfig, Trainer
from training.schedule import build_optimizer

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def _model(name: str, device: str) -> torch.nn.Module:
    torch.manual_seed(0)
    return create_model(
        name, img_size=32, patch_size=8, in_chans=1, num_classes=3, dim=32, depth=2, num_heads=2
    ).to(device)


def _grads(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.grad.detach().clone() for n, p in model.named_parameters()}


def _eager_and_graphed(model, forward, images, labels, amp):
    """Loss + gradients of one step through ``forward`` (the graph) and eagerly."""
    out = {}
    for label, fn in (("graph", forward), ("eager", model)):
        model.zero_grad(set_to_none=True)
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=amp):
            logits = fn(images)
        loss = torch.nn.functional.cross_entropy(logits.float(), labels)
        loss.backward()
        out[label] = (logits.detach().float().clone(), _grads(model))
    return out


def test_cpu_inputs_run_eagerly() -> None:
    model = _model("plstm_vis_t", "cpu")
    graphed = GraphedTraining(model, amp=False)
    images = torch.randn(4, 1, 32, 32)
    assert torch.equal(graphed(images), model(images))
    assert not graphed.captured


def test_trainer_refuses_graphs_without_cuda(tmp_path: Path) -> None:
    images, labels = torch.randn(8, 1, 32, 32), torch.randint(0, 3, (8,))
    spec = RunSpec(
        experiment="t",
        model=_model("vit_t", "cpu"),
        model_name="vit_t",
        input_kind="image",
        task="classification",
        labels=["a", "b", "c"],
        dataset="t",
        train_set=TensorDataset(images, labels),
        val_set=TensorDataset(images, labels),
    )
    config = TrainConfig(epochs=1, batch_size=4, lr=1e-3, cuda_graph=True)
    with pytest.raises(ValueError, match="cuda_graph needs a CUDA device"):
        Trainer(spec, config, tmp_path / "run", device="cpu")


@cuda
@pytest.mark.parametrize("name", ["plstm_vis_t", "vit_t"])
@pytest.mark.parametrize("amp", [False, True])
def test_graph_replay_matches_eager(name: str, amp: bool) -> None:
    model = _model(name, "cuda").train()
    graphed = GraphedTraining(model, amp=amp)
    gen = torch.Generator(device="cuda").manual_seed(1)
    tol = 2e-2 if amp else 1e-5
    for _ in range(3):  # capture on the first, replay on fresh data afterwards
        images = torch.randn(6, 1, 32, 32, device="cuda", generator=gen)
        labels = torch.randint(0, 3, (6,), device="cuda", generator=gen)
        runs = _eager_and_graphed(model, graphed, images, labels, amp)
        (g_logits, g_grads), (e_logits, e_grads) = runs["graph"], runs["eager"]
        scale = e_logits.abs().max()
        assert (g_logits - e_logits).abs().max() <= tol * scale
        assert set(g_grads) == set(e_grads)
        for n in e_grads:
            ref = e_grads[n]
            assert (g_grads[n] - ref).abs().max() <= tol * ref.abs().max().clamp_min(1e-6), n
    assert graphed.captured


@cuda
def test_other_shapes_and_eval_run_eagerly() -> None:
    model = _model("plstm_vis_t", "cuda").train()
    graphed = GraphedTraining(model, amp=False)
    graphed(torch.randn(6, 1, 32, 32, device="cuda")).sum().backward()
    small = torch.randn(2, 1, 32, 32, device="cuda")
    assert torch.allclose(graphed(small), model(small), atol=1e-6)
    model.eval()
    with torch.no_grad():
        images = torch.randn(6, 1, 32, 32, device="cuda")
        assert torch.allclose(graphed(images), model(images), atol=1e-6)


@cuda
@pytest.mark.parametrize("amp", [False, True])
def test_training_steps_match_eager_training(amp: bool) -> None:
    """Several AdamW steps through the graphs reach the weights eager training reaches: the
    replayed backward feeds the optimiser, and the optimiser's in-place updates reach the
    captured forward."""
    eager, graphed_model = _model("plstm_vis_t", "cuda"), _model("plstm_vis_t", "cuda")
    graphed = GraphedTraining(graphed_model, amp=amp)
    runs = []
    for model, forward in ((eager, eager), (graphed_model, graphed)):
        model.train()
        opt = build_optimizer(model, 1e-2, 0.05)
        # Adam moves a weight by ±lr for any gradient well above eps: one near zero whose sign
        # differs between two runs by rounding (the fused backward sums with atomics) would move
        # it by 2·lr; with a larger eps the update stays proportional to such gradients
        for group in opt.param_groups:
            group["eps"] = 1e-3
        gen = torch.Generator(device="cuda").manual_seed(3)
        for _ in range(5):
            images = torch.randn(6, 1, 32, 32, device="cuda", generator=gen)
            labels = torch.randint(0, 3, (6,), device="cuda", generator=gen)
            with torch.autocast("cuda", dtype=torch.bfloat16, enabled=amp):
                logits = forward(images)
            loss = torch.nn.functional.cross_entropy(logits.float(), labels)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        runs.append({n: p.detach().clone() for n, p in model.named_parameters()})
    moved = max(
        (runs[0][n] - p.detach()).abs().max()
        for n, p in _model("plstm_vis_t", "cuda").named_parameters()
    )
    assert moved > 1e-3  # the steps changed the weights
    tol = 5e-2 if amp else 1e-4
    for name, ref in runs[0].items():
        assert (runs[1][name] - ref).abs().max() <= tol * max(ref.abs().max(), 1e-3), name
