"""How much each part of an input contributes to one output of a model: image patches and
graph nodes (atoms).

Integrated gradients (Sundararajan et al., 2017) with a right Riemann sum of ``steps``
points: for an input x, a baseline x̄ (an input that shows nothing: a blank image, atoms
without features) and output f_t,

    contribution_i = (x_i − x̄_i) · mean_k ∂f_t/∂x_i (x̄ + α_k (x − x̄)),   α_k = k / steps,

summed over the elements of a patch (pixels and channels) or of a node (its features).
``steps = 1`` is gradient × (input − baseline), one forward and one backward pass; as
``steps`` grows the contributions sum to f_t(x) − f_t(x̄) (completeness). Every point of the
path goes through the model as one batch, so the cost is that of a forward and backward pass
of ``steps`` inputs, plus a forward pass without gradients of the baseline. Samples must not
interact inside the model (eval mode: no batch statistics), which holds for every network of
:mod:`models`. The model's parameters are excluded from the gradient (their ``requires_grad``
is off while it runs, then restored): the backward pass computes input gradients only, and
nothing accumulates in ``.grad``. Callers must not use the model from another thread
meanwhile.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import nn

MAX_STEPS = 64


@dataclass(frozen=True)
class Attribution:
    """``contributions``: ``[B,X,Y]`` per patch (images) or ``[N]`` per node (graphs);
    ``outputs`` ``[B,K]`` / ``[G,K]`` at the input, ``baseline_outputs`` the same at the
    baseline; ``targets`` ``[B]`` / ``[G]``: the explained output index of every sample."""

    contributions: torch.Tensor
    outputs: torch.Tensor
    baseline_outputs: torch.Tensor
    targets: torch.Tensor


@contextmanager
def _frozen(model: nn.Module) -> Iterator[None]:
    """The model's parameters without ``requires_grad`` for the block, then as they were."""
    flags = [(p, p.requires_grad) for p in model.parameters()]
    for p, _ in flags:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p, flag in flags:
            p.requires_grad_(flag)


def _check_steps(steps: int) -> None:
    if isinstance(steps, bool) or not isinstance(steps, int) or not 1 <= steps <= MAX_STEPS:
        raise ValueError(f"steps must be an integer between 1 and {MAX_STEPS}, got {steps!r}")


def _alphas(steps: int, like: torch.Tensor) -> torch.Tensor:
    """``[S]`` = 1/S, 2/S, ..., 1 in the dtype and on the device of ``like``."""
    return torch.arange(1, steps + 1, device=like.device, dtype=like.dtype) / steps


def _targets(targets: torch.Tensor | None, outputs: torch.Tensor) -> torch.Tensor:
    """``targets`` checked against outputs ``[B,K]``, or the largest output per sample."""
    if targets is None:
        return outputs.detach().argmax(-1)
    targets = targets.to(device=outputs.device, dtype=torch.long)
    if targets.shape != outputs.shape[:1]:
        raise ValueError(
            f"targets must have shape [{outputs.shape[0]}], got {tuple(targets.shape)}"
        )
    if bool(((targets < 0) | (targets >= outputs.shape[1])).any()):
        raise ValueError(f"targets must be output indices in [0, {outputs.shape[1]})")
    return targets


def image_patch_contributions(
    model: nn.Module,
    images: torch.Tensor,
    baseline: torch.Tensor,
    patch_size: int,
    targets: torch.Tensor | None = None,
    steps: int = 1,
) -> Attribution:
    """Contributions of every ``patch_size``² patch to output ``targets`` (default: the
    largest output of each image).

    images ``[B,C,H,W]`` (H, W multiples of ``patch_size``), baseline broadcastable to it
    (e.g. ``[C,1,1]``: the model input of a blank image), ``model(images) → [B,K]``.
    Returns contributions ``[B,X,Y]`` with X = H / p along the height, Y = W / p.
    """
    _check_steps(steps)
    if images.dim() != 4:
        raise ValueError(f"images must have shape [B,C,H,W], got {tuple(images.shape)}")
    b, c, h, w = images.shape
    p = patch_size
    if h % p or w % p:
        raise ValueError(f"image size {h}x{w} is not a multiple of the patch size {p}")
    baseline = baseline.to(images).expand(b, c, h, w)
    delta = images - baseline
    alphas = _alphas(steps, images).reshape(steps, 1, 1, 1, 1)
    points = (baseline + alphas * delta).reshape(steps * b, c, h, w).requires_grad_(True)
    with _frozen(model):
        with torch.no_grad():
            baseline_outputs = model(baseline)
        with torch.enable_grad():
            outputs = model(points).reshape(steps, b, -1)
            targets = _targets(targets, outputs[-1])
            selected = outputs.gather(2, targets.expand(steps, b).unsqueeze(2))
            (gradient,) = torch.autograd.grad(selected.sum(), points)
    pixels = (gradient.reshape(steps, b, c, h, w).mean(0) * delta).sum(1)
    patches = pixels.reshape(b, h // p, p, w // p, p).sum((2, 4))
    return Attribution(
        contributions=patches.detach().float(),
        outputs=outputs[-1].detach().float(),
        baseline_outputs=baseline_outputs.float(),
        targets=targets,
    )


def graph_node_contributions(
    model: nn.Module,
    x: torch.Tensor,
    edge_index: torch.Tensor,
    batch: torch.Tensor,
    num_graphs: int,
    edge_attr: torch.Tensor | None = None,
    targets: torch.Tensor | None = None,
    steps: int = 1,
) -> Attribution:
    """Contributions of every node to output ``targets`` of its graph (default: the largest
    output of each graph), against the baseline of nodes without features (all zeros; the
    edges and their features stay).

    A disjoint union of G graphs as :func:`models.molecule_features.batch_graphs` builds it:
    x ``[N,F]``, edge_index ``[2,E]``, batch ``[N]``, edge_attr ``[E,Fe]`` or None;
    ``model(x, edge_index, batch, num_graphs=G, edge_attr=...) → [G,K]``.
    Returns contributions ``[N]``.
    """
    _check_steps(steps)
    n, f = x.shape
    attrs = None if edge_attr is None else edge_attr.repeat(steps, 1)
    points = (_alphas(steps, x).reshape(steps, 1, 1) * x).reshape(steps * n, f)
    points.requires_grad_(True)
    node_offsets = torch.arange(steps, device=x.device).mul(n).reshape(steps, 1, 1)
    edges = (edge_index.unsqueeze(0) + node_offsets).permute(1, 0, 2).reshape(2, -1)
    graph_offsets = torch.arange(steps, device=x.device).mul(num_graphs).reshape(steps, 1)
    batches = (batch.unsqueeze(0) + graph_offsets).reshape(-1)
    with _frozen(model):
        with torch.no_grad():
            baseline_outputs = model(
                torch.zeros_like(x), edge_index, batch, num_graphs=num_graphs, edge_attr=edge_attr
            )
        with torch.enable_grad():
            outputs = model(points, edges, batches, num_graphs=steps * num_graphs, edge_attr=attrs)
            outputs = outputs.reshape(steps, num_graphs, -1)
            targets = _targets(targets, outputs[-1])
            selected = outputs.gather(2, targets.expand(steps, num_graphs).unsqueeze(2))
            (gradient,) = torch.autograd.grad(selected.sum(), points)
    nodes = (gradient.reshape(steps, n, f).mean(0) * x).sum(1)
    return Attribution(
        contributions=nodes.detach().float(),
        outputs=outputs[-1].detach().float(),
        baseline_outputs=baseline_outputs.float(),
        targets=targets,
    )
