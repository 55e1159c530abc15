"""ONNX translations that torch's TorchScript-based exporter lacks or gets wrong, for our models.

:func:`register_symbolics` (idempotent) adds them to ``torch.onnx``'s registry:

- ``aten::diag_embed`` (the direct term on the diagonal of every pLSTM gating matrix):
  ``x [..., N] → x[..., :, None] · I_N`` with ``I_N`` from ``EyeLike``; only the default
  ``offset=0, dim1=-2, dim2=-1`` form, which is the one the ops call.
- ``aten::rms_norm`` (``torch.nn.RMSNorm`` in the graph models): ``x / sqrt(mean(x²) + eps) ·
  weight`` over the normalised trailing axes, ``eps`` defaulting to float32's machine epsilon
  as in torch.

and replaces three of torch's own:

- ``aten::index_add``: torch's translation ignores repeated indices (the last write wins);
  ours is ``ScatterElements`` with ``reduction="add"``, which sums them — every segment sum of
  the graph models (pooling, messages into nodes, softmax denominators) has repeats.
- ``aten::scatter_reduce``: one ``ScatterElements`` with the matching reduction, without the
  rank-0 branches of torch's version (include_self=True only, as our models call it).
- ``aten::sigmoid``: ``1 / (1 + exp(−x))``. ONNX Runtime's CPU ``Sigmoid`` kernel is an
  approximation with relative errors up to ~2e-6 (torch's: ~1e-7); every pLSTM gate is a
  sigmoid and the errors compound along paths, which cost a trained solubility model 4.6e-4
  in logits against 6e-6 with this form.
"""

from __future__ import annotations

from typing import Any

import torch
from torch.onnx import register_custom_op_symbolic

MIN_OPSET = 17
"""The lowest opset these translations (and our models' other ops) are written for."""

_registered = False


def _constant(value: Any) -> Any:
    """The Python value of a constant argument of a traced op (None when it is absent)."""
    node = value.node()
    if node.mustBeNone():
        return None
    if node.kind() in ("onnx::Constant", "prim::Constant") and node.hasAttribute("value"):
        constant = getattr(node, node.kindOf("value"))("value")  # node.t / .i / .f / .s ...
        return constant.tolist() if isinstance(constant, torch.Tensor) else constant
    return value.toIValue()


def _axes(g: Any, axes: list[int]) -> Any:
    return g.op("Constant", value_t=torch.tensor(axes, dtype=torch.long))


def _diag_embed(g: Any, x: Any, offset: Any, dim1: Any, dim2: Any) -> Any:
    layout = (_constant(offset), _constant(dim1), _constant(dim2))
    if layout != (0, -2, -1):
        raise torch.onnx.errors.SymbolicValueError(
            f"diag_embed is exported only with offset=0, dim1=-2, dim2=-1, got {layout}", x
        )
    n = g.op("Shape", x, start_i=-1)  # [1]: N
    zeros = g.op("ConstantOfShape", g.op("Concat", n, n, axis_i=0), value_t=torch.tensor([0.0]))
    eye = g.op("CastLike", g.op("EyeLike", zeros), x)  # [N,N]
    return g.op("Mul", g.op("Unsqueeze", x, _axes(g, [-1])), eye)


def _rms_norm(g: Any, x: Any, normalized_shape: Any, weight: Any, eps: Any) -> Any:
    shape = _constant(normalized_shape)
    axes = list(range(-len(shape), 0))
    eps_value = _constant(eps)
    if eps_value is None:
        eps_value = torch.finfo(torch.float32).eps
    square = g.op("Mul", x, x)
    if g.opset >= 18:
        mean = g.op("ReduceMean", square, _axes(g, axes), keepdims_i=1)
    else:
        mean = g.op("ReduceMean", square, axes_i=axes, keepdims_i=1)
    eps_t = g.op("CastLike", g.op("Constant", value_t=torch.tensor(float(eps_value))), x)
    out = g.op("Mul", x, g.op("Reciprocal", g.op("Sqrt", g.op("Add", mean, eps_t))))
    if weight.node().mustBeNone():
        return out
    return g.op("Mul", out, weight)


def _index_add(g: Any, x: Any, dim: Any, index: Any, source: Any, alpha: Any) -> Any:
    axis = _constant(dim)
    rank = source.type().dim()
    if rank is None:
        raise torch.onnx.errors.SymbolicValueError("index_add: the source's rank is unknown", x)
    scale = _constant(alpha)
    if scale is not None and scale != 1:
        source = g.op(
            "Mul", source, g.op("CastLike", g.op("Constant", value_t=torch.tensor(scale)), source)
        )
    shape = [1] * rank
    shape[axis] = -1
    index = g.op("Reshape", index, _axes(g, shape))
    index = g.op("Expand", index, g.op("Shape", source))
    return g.op("ScatterElements", x, index, source, axis_i=axis, reduction_s="add")


_REDUCTIONS = {"sum": "add", "prod": "mul", "amax": "max", "amin": "min"}


def _scatter_reduce(
    g: Any, x: Any, dim: Any, index: Any, source: Any, reduce: Any, include_self: Any
) -> Any:
    reduction = _constant(reduce)
    if reduction not in _REDUCTIONS or not _constant(include_self):
        raise torch.onnx.errors.SymbolicValueError(
            f"scatter_reduce is exported for reduce in {sorted(_REDUCTIONS)} with "
            f"include_self=True only, got {reduction!r}",
            x,
        )
    return g.op(
        "ScatterElements",
        x,
        index,
        source,
        axis_i=_constant(dim),
        reduction_s=_REDUCTIONS[reduction],
    )


def _sigmoid(g: Any, x: Any) -> Any:
    """Exact-to-rounding sigmoid from Exp (module docstring: ORT's Sigmoid is approximate)."""
    one = g.op("CastLike", g.op("Constant", value_t=torch.tensor(1.0)), x)
    return g.op("Div", one, g.op("Add", one, g.op("Exp", g.op("Neg", x))))


def register_symbolics() -> None:
    """Register the translations with ``torch.onnx`` (for every opset >= :data:`MIN_OPSET`)."""
    global _registered
    if _registered:
        return
    register_custom_op_symbolic("aten::diag_embed", _diag_embed, MIN_OPSET)
    register_custom_op_symbolic("aten::rms_norm", _rms_norm, MIN_OPSET)
    register_custom_op_symbolic("aten::index_add", _index_add, MIN_OPSET)
    register_custom_op_symbolic("aten::scatter_reduce", _scatter_reduce, MIN_OPSET)
    register_custom_op_symbolic("aten::sigmoid", _sigmoid, MIN_OPSET)
    _registered = True
