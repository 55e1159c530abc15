"""CUDA-graph replay of image-model inference.

A pLSTM-Vis forward is thousands of small kernels: on a GPU its time is host launch latency
(about 30 ms on an H100 whatever the batch size, ``docs/benchmarks/server_h100.md``), and in
the server those launches also compete with the event loop for the GIL. Replaying a captured
graph launches the whole forward at once. A graph has fixed shapes, so a batch of n images is
padded to the next batch-size bucket (powers of two up to ``max_batch``); one graph per
(bucket, image shape, dtype, path) is captured on first use, up to ``max_graphs`` of them.
Padding rows are zeros and do not affect the real rows (every sample is computed
independently). Batches larger than ``max_batch``, images above ``max_tokens`` tokens and
CPU models run eagerly.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Hashable

import torch

from plstm_core.ops.sizes import next_pow2


class _Captured:
    def __init__(self, fn: Callable[[torch.Tensor], torch.Tensor], example: torch.Tensor) -> None:
        self.input = torch.zeros_like(example)
        stream = torch.cuda.Stream(device=example.device)
        stream.wait_stream(torch.cuda.current_stream(example.device))
        with torch.cuda.stream(stream):  # warm-up: Triton compilation, cuBLAS workspaces
            for _ in range(2):
                fn(self.input)
        torch.cuda.current_stream(example.device).wait_stream(stream)
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph):
            self.output = fn(self.input)

    def run(self, x: torch.Tensor) -> torch.Tensor:
        n = x.shape[0]
        self.input[:n].copy_(x)
        self.input[n:].zero_()
        self.graph.replay()
        return self.output[:n].clone()


class InferenceGraphs:
    """Runs ``fn(x)`` for an image batch ``x [B,C,H,W]`` through cached CUDA graphs.

    ``key`` distinguishes forwards of the same shape that differ otherwise (the inference
    path). Not thread-safe: callers hold the model's lock. ``captures`` counts graphs made.
    """

    def __init__(self, max_batch: int = 64, max_tokens: int = 1024, max_graphs: int = 32) -> None:
        if max_batch < 1 or max_graphs < 1:
            raise ValueError("max_batch and max_graphs must be positive")
        self.max_batch = next_pow2(max_batch)
        self.max_tokens = max_tokens
        self.max_graphs = max_graphs
        self.captures = 0
        self._graphs: OrderedDict[Hashable, _Captured] = OrderedDict()

    def __len__(self) -> int:
        """Graphs held now."""
        return len(self._graphs)

    def eligible(self, x: torch.Tensor, tokens: int) -> bool:
        return x.is_cuda and x.shape[0] <= self.max_batch and tokens <= self.max_tokens

    def __call__(
        self,
        fn: Callable[[torch.Tensor], torch.Tensor],
        x: torch.Tensor,
        tokens: int,
        key: Hashable,
    ) -> torch.Tensor:
        if not self.eligible(x, tokens):
            return fn(x)
        bucket = next_pow2(x.shape[0])
        full = (key, bucket, tuple(x.shape[1:]), x.dtype, x.device)
        captured = self._graphs.get(full)
        if captured is None:
            example = x.new_zeros((bucket, *x.shape[1:]))
            captured = _Captured(fn, example)
            self.captures += 1
            self._graphs[full] = captured
            if len(self._graphs) > self.max_graphs:
                self._graphs.popitem(last=False)
        else:
            self._graphs.move_to_end(full)
        return captured.run(x)
