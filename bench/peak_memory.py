"""Peak bytes of live tensors while code runs, on any device, the ``meta`` device included.

:class:`PeakMemory` is a ``TorchDispatchMode`` that counts the storage of every tensor an op
creates until the last tensor viewing it is freed: the peak it records is what
``torch.cuda.max_memory_allocated`` would show without the allocator's rounding and caching,
and it works where no allocator statistics exist (the CPU) and where nothing is allocated at all
(``meta`` tensors: the peak memory of a forward on a 96×96 grid, measured in seconds without the
17 GB). Tensors that exist before the mode is entered (weights, inputs) are not counted. Code
that reads tensor values (``.item()``, ``.tolist()``) cannot run on ``meta``.

    with torch.inference_mode(), PeakMemory() as memory:
        model(images)
    memory.peak  # bytes
"""

from __future__ import annotations

import weakref
from typing import Any

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten


class PeakMemory(TorchDispatchMode):
    """``live``: bytes of the storages created inside the mode and still referenced;
    ``peak``: the largest ``live`` seen."""

    def __init__(self) -> None:
        super().__init__()
        self.live = 0
        self.peak = 0
        self._storages: dict[int, list[int]] = {}  # storage id → [bytes, tensors viewing it]

    def _track(self, tensor: torch.Tensor) -> None:
        storage = tensor.untyped_storage()
        key = storage._cdata
        entry = self._storages.get(key)
        if entry is None:
            entry = self._storages[key] = [storage.nbytes(), 0]
            self.live += entry[0]
            self.peak = max(self.peak, self.live)
        entry[1] += 1
        weakref.finalize(tensor, self._release, key)

    def _release(self, key: int) -> None:
        entry = self._storages.get(key)
        if entry is None:
            return
        entry[1] -= 1
        if entry[1] == 0:
            self.live -= entry[0]
            del self._storages[key]

    def __torch_dispatch__(
        self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None
    ) -> Any:
        out = func(*args, **(kwargs or {}))
        inputs = [a for a in tree_flatten((args, kwargs))[0] if isinstance(a, torch.Tensor)]
        ids = {id(a) for a in inputs}
        untracked = {a.untyped_storage()._cdata for a in inputs} - set(self._storages)
        for tensor in tree_flatten(out)[0]:
            if not isinstance(tensor, torch.Tensor) or id(tensor) in ids:
                continue
            if tensor.untyped_storage()._cdata in untracked:
                continue  # a view of a weight or an input: no new memory
            self._track(tensor)
        return out
