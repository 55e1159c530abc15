"""Image classifiers: ``PLSTMVision`` (pLSTM mixer, paper B.1) and the ``ViT`` baseline."""

from __future__ import annotations

import inspect
import json
from typing import Any

from torch import nn

from models.backbone import AttentionMixer, IsotropicVisionModel
from models.capabilities import ModelCapabilities
from plstm_core.layers import PLSTMGridLayer
from plstm_core.layers.grid_layer import GRID_METHODS

PLSTM_MODES = ("P", "D")


def _constructor_config(cls: type, values: dict[str, Any]) -> dict[str, Any]:
    """The constructor arguments of ``cls`` picked from ``values`` (its ``locals()``), checked
    to be JSON-serialisable so that ``cls(**config)`` can rebuild the model from a file."""
    names = [n for n in inspect.signature(cls.__init__).parameters if n != "self"]
    config = {n: values[n] for n in names}
    try:
        json.dumps(config, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{cls.__name__} arguments must be JSON-serialisable: {exc}") from None
    return config


def _check_method(method: str) -> None:
    if method not in GRID_METHODS:
        raise ValueError(f"method must be one of {list(GRID_METHODS)}, got {method!r}")


class PLSTMVision(IsotropicVisionModel):
    """pLSTM-Vis: the isotropic pre-norm backbone with a :class:`PLSTMGridLayer` as the mixer.

    images ``[B,C,H,W]`` (H, W positive multiples of ``patch_size``) → logits
    ``[B,num_classes]``. Block i uses mode ``mode_pattern[i % len(mode_pattern)]``: the
    default ``"PD"`` alternates P-mode (even blocks) and D-mode (odd blocks) as in the paper
    (Table 4); ``"P"`` or ``"D"`` give the single-mode ablations. ``method`` selects the op
    implementation of every pLSTM layer ("parallel" | "recurrent" | "chunkwise" | "fused");
    it changes cost, not results, and can be switched later with :meth:`set_method`.
    Paper sizes (patch 16, depth 12): T dim 192 / 3 heads, S 384 / 6, B 768 / 12.
    ``layer_scale`` None disables LayerScale (paper: pLSTM without, "LayerScale 1" on arrow
    pointing); ``use_pos_embed=False`` is the paper's "no posemb." ablation. Pixels are
    standardised as ``(x - input_mean) / input_std`` inside the model, so callers (the server,
    ONNX) feed the raw [0, 1] image. ``stem`` "patch" is the paper's linear patch projection,
    "conv" a small convolutional stem (:class:`models.backbone.ConvStem`).
    """

    capabilities = ModelCapabilities(
        "image", ("parallel", "recurrent", "chunkwise"), "plstm_vision", onnx=True
    )

    def __init__(
        self,
        img_size: int = 192,
        patch_size: int = 16,
        in_chans: int = 3,
        num_classes: int = 1000,
        dim: int = 192,
        depth: int = 12,
        num_heads: int = 3,
        pooling: str = "corners",
        method: str = "parallel",
        chunk_size: int = 16,
        qk_dim: int | None = None,
        mode_pattern: str = "PD",
        mlp_ratio: float = 4.0,
        layer_scale: float | None = None,
        drop_path_rate: float = 0.0,
        use_pos_embed: bool = True,
        eps: float = 1e-5,
        input_mean: float = 0.0,
        input_std: float = 1.0,
        stem: str = "patch",
        head_norm: str = "none",
    ) -> None:
        _check_method(method)
        if (
            not isinstance(mode_pattern, str)
            or not mode_pattern
            or set(mode_pattern) - set(PLSTM_MODES)
        ):
            raise ValueError(
                f"mode_pattern must be a non-empty string of {list(PLSTM_MODES)}, "
                f"got {mode_pattern!r}"
            )
        config = _constructor_config(PLSTMVision, locals())

        def mixer(i: int) -> nn.Module:
            mode = mode_pattern[i % len(mode_pattern)]
            return PLSTMGridLayer(
                dim, num_heads, mode=mode, qk_dim=qk_dim, method=method, chunk_size=chunk_size
            )

        super().__init__(
            img_size=img_size,
            patch_size=patch_size,
            in_chans=in_chans,
            num_classes=num_classes,
            dim=dim,
            depth=depth,
            mixer_factory=mixer,
            pooling=pooling,
            mlp_ratio=mlp_ratio,
            layer_scale=layer_scale,
            drop_path_rate=drop_path_rate,
            use_pos_embed=use_pos_embed,
            eps=eps,
            input_mean=input_mean,
            input_std=input_std,
            stem=stem,
            head_norm=head_norm,
        )
        self._config = config

    def plstm_layers(self) -> list[PLSTMGridLayer]:
        """The pLSTM layers, block by block."""
        return [m for m in self.modules() if isinstance(m, PLSTMGridLayer)]

    @property
    def method(self) -> str:
        return self._config["method"]

    def set_method(self, method: str, chunk_size: int | None = None) -> None:
        """Switch every pLSTM layer to ``method`` (and ``chunk_size`` when given); the config
        follows, so a checkpoint saved afterwards loads with this method."""
        _check_method(method)
        if chunk_size is not None and (not isinstance(chunk_size, int) or chunk_size < 1):
            raise ValueError(f"chunk_size must be a positive integer, got {chunk_size!r}")
        for layer in self.plstm_layers():
            layer.method = method
            if chunk_size is not None:
                layer.chunk_size = chunk_size
        self._config["method"] = method
        if chunk_size is not None:
            self._config["chunk_size"] = chunk_size


class ViT(IsotropicVisionModel):
    """The ViT baseline: the same backbone with multi-head self-attention as the mixer.

    images ``[B,C,H,W]`` → logits ``[B,num_classes]``; no class token, mean pooling by default.
    The position embedding is resized bicubically to other resolutions like PLSTMVision's;
    ``input_mean`` / ``input_std`` and ``stem`` as there.
    """

    capabilities = ModelCapabilities("image", ("parallel",), "vit", onnx=True)

    def __init__(
        self,
        img_size: int = 192,
        patch_size: int = 16,
        in_chans: int = 3,
        num_classes: int = 1000,
        dim: int = 192,
        depth: int = 12,
        num_heads: int = 3,
        pooling: str = "mean",
        qkv_bias: bool = True,
        mlp_ratio: float = 4.0,
        layer_scale: float | None = None,
        drop_path_rate: float = 0.0,
        use_pos_embed: bool = True,
        eps: float = 1e-5,
        input_mean: float = 0.0,
        input_std: float = 1.0,
        stem: str = "patch",
        head_norm: str = "none",
    ) -> None:
        config = _constructor_config(ViT, locals())
        super().__init__(
            img_size=img_size,
            patch_size=patch_size,
            in_chans=in_chans,
            num_classes=num_classes,
            dim=dim,
            depth=depth,
            mixer_factory=lambda i: AttentionMixer(dim, num_heads, qkv_bias),
            pooling=pooling,
            mlp_ratio=mlp_ratio,
            layer_scale=layer_scale,
            drop_path_rate=drop_path_rate,
            use_pos_embed=use_pos_embed,
            eps=eps,
            input_mean=input_mean,
            input_std=input_std,
            stem=stem,
            head_norm=head_norm,
        )
        self._config = config
