"""CUDA-graph capture of a model's training forward + backward.

A pLSTM-Vis training step launches thousands of small kernels (the column hierarchy of the
parallel op and its autograd), so on a GPU the step is bound by launch latency rather than by
arithmetic: replaying the same work from a captured CUDA graph removes that overhead
(``docs/benchmarks/models_h100.md`` measures the effect). Image batches have one fixed shape,
which is what a captured graph needs; a batch of another shape (the short last batch of an
epoch) and every evaluation run the model eagerly with the same parameters.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

Signature = tuple[tuple[tuple[int, ...], torch.dtype], ...]


class _Forward(nn.Module):
    """A parameter-sharing wrapper: ``make_graphed_callables`` replaces *its* ``forward``, and
    the wrapped model stays an ordinary eager module."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        return self.model(*inputs)


class GraphedTraining:
    """Calls ``model(*inputs)`` for training, through CUDA graphs once captured.

    The first call whose inputs are all CUDA tensors captures forward and backward for that
    input signature (shapes and dtypes) under bf16 autocast when ``amp`` (the autocast weight
    cache must be off during capture, so the weight casts are part of the graph); later calls
    with the same signature replay the graphs and return an output whose ``backward()``
    replays the backward graph, accumulating into the parameters' ``.grad`` as usual. Inputs of
    any other signature, or while the model is in eval mode, run eagerly under the caller's
    autocast.

    Captured graphs use static input / output buffers: every replay copies the inputs in, and
    its output is overwritten by the next replay (take the loss before the next call).
    The model must be free of host synchronisation (``.item()``, data-dependent shapes) and of
    hooks; dropout is fine (graph-safe RNG).
    """

    def __init__(self, model: nn.Module, *, amp: bool, warmup_iters: int = 3) -> None:
        self.model = model
        self.amp = amp
        self.warmup_iters = warmup_iters
        self._graphed: Callable[..., torch.Tensor] | None = None
        self._signature: Signature | None = None

    @staticmethod
    def signature(inputs: tuple[torch.Tensor, ...]) -> Signature:
        return tuple((tuple(t.shape), t.dtype) for t in inputs)

    @property
    def captured(self) -> bool:
        return self._graphed is not None

    def _capture(self, inputs: tuple[torch.Tensor, ...]) -> None:
        wrapper = _Forward(self.model)
        samples = tuple(t.detach().clone() for t in inputs)
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=self.amp, cache_enabled=False):
            self._graphed = torch.cuda.make_graphed_callables(
                wrapper, samples, num_warmup_iters=self.warmup_iters
            )
        self._signature = self.signature(inputs)

    def __call__(self, *inputs: torch.Tensor) -> torch.Tensor:
        eligible = self.model.training and all(
            isinstance(t, torch.Tensor) and t.is_cuda for t in inputs
        )
        if eligible and self._graphed is None:
            self._capture(inputs)
        if eligible and self.signature(inputs) == self._signature:
            return self._graphed(*inputs)
        return self.model(*inputs)  # under the caller's autocast
