"""Isotropic pre-norm ViT-style image classifier over a token grid with a pluggable token mixer.

Patch embedding (Conv2d, stride = patch) → learnable position embedding (stored at the training
grid, resized bicubically to the input's grid) → ``depth`` residual blocks
``x = x + mixer(norm(x)); x = x + mlp(norm(x))`` (RMSNorm, MLP ratio 4 with GELU, optional
LayerScale and stochastic depth) → final RMSNorm → pooling → linear head (paper B.1, DESIGN.md
section 5). The mixer maps a token grid ``[B,X,Y,D]`` to ``[B,X,Y,D]``: a pLSTM layer
(``PLSTMVision``) or multi-head self-attention (``ViT``, :class:`AttentionMixer`).
Grid axis X runs along the image height, Y along the width.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

POOLINGS = ("corners", "mean")


class RMSNorm(nn.Module):
    """``y = x / sqrt(mean(x²) + eps) · weight`` over the last axis of size D.

    One fused ``F.rms_norm`` call (bf16/fp16 inputs are reduced in float32 inside it and
    returned in their own dtype, the weight cast to that dtype).
    """

    def __init__(self, dim: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.dim = dim
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.rms_norm(x, (self.dim,), self.weight.to(x.dtype), self.eps)

    def extra_repr(self) -> str:
        return f"{self.dim}, eps={self.eps}"


class Mlp(nn.Module):
    """Linear(D, r·D) → GELU → Linear(r·D, D) on the last axis."""

    def __init__(self, dim: int, ratio: float = 4.0) -> None:
        super().__init__()
        hidden = round(dim * ratio)
        if hidden < 1:
            raise ValueError(f"mlp_ratio ({ratio}) gives an empty hidden layer for dim {dim}")
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class LayerScale(nn.Module):
    """Per-channel learnable scale ``x · gamma`` with gamma ``[D]`` initialised to ``init``."""

    def __init__(self, dim: int, init: float) -> None:
        super().__init__()
        self.gamma = nn.Parameter(torch.full((dim,), float(init)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gamma.to(x.dtype)


class DropPath(nn.Module):
    """Stochastic depth: in training, zero a residual branch per sample with probability
    ``rate`` and scale the kept ones by 1 / (1 − rate); the identity in eval mode."""

    def __init__(self, rate: float = 0.0) -> None:
        super().__init__()
        if not 0.0 <= rate < 1.0:
            raise ValueError(f"drop path rate must be in [0, 1), got {rate}")
        self.rate = rate

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.rate == 0.0:
            return x
        keep = 1.0 - self.rate
        mask = torch.empty((x.shape[0],) + (1,) * (x.dim() - 1), device=x.device, dtype=x.dtype)
        return x * mask.bernoulli_(keep) / keep

    def extra_repr(self) -> str:
        return f"rate={self.rate}"


class AttentionMixer(nn.Module):
    """Multi-head self-attention over all X·Y tokens of a grid (no mask, no position bias).

    x ``[B,X,Y,D]`` → ``[B,X,Y,D]``; per head K = V = D / H. Uses
    ``F.scaled_dot_product_attention``: O(B·H·(XY)²·K) time.
    """

    def __init__(self, dim: int, num_heads: int, qkv_bias: bool = True) -> None:
        super().__init__()
        if dim < 1 or num_heads < 1 or dim % num_heads:
            raise ValueError(f"dim ({dim}) must be a positive multiple of num_heads ({num_heads})")
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, 3 * dim, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, X, Y, D = x.shape
        H = self.num_heads
        qkv = self.qkv(x).reshape(B, X * Y, 3, H, D // H).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)  # [B,H,XY,K]
        out = F.scaled_dot_product_attention(q, k, v)
        return self.proj(out.transpose(1, 2).reshape(B, X, Y, D))


class Block(nn.Module):
    """Pre-norm residual block on ``[B,X,Y,D]``: ``x + mixer(norm(x))``, ``x + mlp(norm(x))``."""

    def __init__(
        self,
        dim: int,
        mixer: nn.Module,
        mlp_ratio: float = 4.0,
        layer_scale: float | None = None,
        drop_path: float = 0.0,
        eps: float = 1e-5,
    ) -> None:
        super().__init__()
        self.norm1 = RMSNorm(dim, eps)
        self.mixer = mixer
        self.ls1 = nn.Identity() if layer_scale is None else LayerScale(dim, layer_scale)
        self.norm2 = RMSNorm(dim, eps)
        self.mlp = Mlp(dim, mlp_ratio)
        self.ls2 = nn.Identity() if layer_scale is None else LayerScale(dim, layer_scale)
        self.drop_path = DropPath(drop_path)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.drop_path(self.ls1(self.mixer(self.norm1(x))))
        return x + self.drop_path(self.ls2(self.mlp(self.norm2(x))))


class PatchEmbed(nn.Module):
    """Non-overlapping patches: images ``[B,C,H,W]`` → tokens ``[B,X,Y,D]`` with X = H / patch,
    Y = W / patch. H and W must be positive multiples of the patch size."""

    def __init__(self, patch_size: int, in_chans: int, dim: int) -> None:
        super().__init__()
        self.patch_size = patch_size
        self.in_chans = in_chans
        self.proj = nn.Conv2d(in_chans, dim, kernel_size=patch_size, stride=patch_size)

    def check_input(self, x: torch.Tensor) -> None:
        """Raise ValueError unless x is ``[B,C,H,W]`` with B ≥ 1, C = in_chans and H, W positive
        multiples of the patch size."""
        if not isinstance(x, torch.Tensor) or x.dim() != 4:
            got = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
            raise ValueError(f"images must have shape [B,C,H,W], got {got}")
        batch, chans, height, width = x.shape
        if chans != self.in_chans:
            raise ValueError(f"images must have {self.in_chans} channels, got {chans}")
        if batch < 1:
            raise ValueError("the image batch is empty")
        p = self.patch_size
        if height < p or width < p or height % p or width % p:
            raise ValueError(
                f"image size {height}x{width} (HxW) is not a positive multiple of the patch "
                f"size {p}"
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.check_input(x)
        return self.proj(x).permute(0, 2, 3, 1)


class ChannelRMSNorm(nn.Module):
    """RMSNorm over the channel axis of ``[B,C,H,W]`` at every pixel (independent of H, W)."""

    def __init__(self, channels: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        xf = x.float() if x.dtype in (torch.bfloat16, torch.float16) else x
        rms = torch.rsqrt(xf.pow(2).mean(dim=1, keepdim=True) + self.eps)
        return (xf * rms * self.weight.to(xf.dtype)[None, :, None, None]).to(x.dtype)


STEM_NORMS: dict[str, Callable[[int], nn.Module]] = {
    "rms": ChannelRMSNorm,
    "batch": nn.BatchNorm2d,
}


class ConvStem(PatchEmbed):
    """Convolutional patch embedding: images ``[B,C,H,W]`` → tokens ``[B,X,Y,D]`` through
    log2(patch) stride-2 3×3 convolutions (widths 32, 64, ... capped at D; each followed by a
    per-pixel :class:`ChannelRMSNorm`, or BatchNorm2d with ``norm="batch"``, and GELU) and a
    1×1 projection to D. Same token grid and
    input contract as :class:`PatchEmbed`; the overlapping, nonlinear filters see sub-patch
    geometry (a thin stroke's direction) that a linear patch projection recovers poorly
    (Xiao et al. 2021, "Early convolutions help transformers see better"). Translation-
    equivariant and free of image-size statistics, so it extrapolates like the patch stem.
    Cost: about 27 M multiply-adds per 96 px image at patch 8 and D = 192 (the T backbone's
    blocks: about 0.8 G); activation memory O(H·W·32 / 4) per image.
    """

    def __init__(self, patch_size: int, in_chans: int, dim: int, norm: str = "rms") -> None:
        nn.Module.__init__(self)
        if norm not in STEM_NORMS:
            raise ValueError(f"conv stem norm must be one of {list(STEM_NORMS)}, got {norm!r}")
        if patch_size < 2 or patch_size & (patch_size - 1):
            raise ValueError(f"the conv stem needs a power-of-two patch size, got {patch_size}")
        self.patch_size = patch_size
        self.in_chans = in_chans
        layers: list[nn.Module] = []
        width = in_chans
        for i in range(patch_size.bit_length() - 1):
            out = min(dim, 32 * 2**i)
            layers += [
                nn.Conv2d(width, out, 3, stride=2, padding=1),
                STEM_NORMS[norm](out),
                nn.GELU(),
            ]
            width = out
        layers.append(nn.Conv2d(width, dim, 1))
        self.proj = nn.Sequential(*layers)


class BatchNormConvStem(ConvStem):
    """:class:`ConvStem` with BatchNorm2d in place of the per-pixel RMSNorm (as in a ResNet):
    per-channel statistics over the batch and all pixels lift the sparse stroke responses
    of almost-blank images; in eval mode it is a fixed per-channel affine map, so it still
    applies to any image size."""

    def __init__(self, patch_size: int, in_chans: int, dim: int) -> None:
        super().__init__(patch_size, in_chans, dim, norm="batch")


STEMS = {"patch": PatchEmbed, "conv": ConvStem, "conv-bn": BatchNormConvStem}
HEAD_NORMS = ("none", "batch", "token-batch")


def resize_pos_embed(pos_embed: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    """Position embedding ``[1,X0,Y0,D]`` → ``[1,X,Y,D]`` for grid = (X, Y).

    Returned unchanged at the stored grid; otherwise bicubic interpolation
    (``F.interpolate``, ``align_corners=False``), computed in float32 and cast back.
    """
    if tuple(pos_embed.shape[1:3]) == tuple(grid):
        return pos_embed
    pe = pos_embed.permute(0, 3, 1, 2).float()
    pe = F.interpolate(pe, size=tuple(grid), mode="bicubic", align_corners=False)
    return pe.permute(0, 2, 3, 1).to(pos_embed.dtype)


def pool_tokens(tokens: torch.Tensor, pooling: str) -> torch.Tensor:
    """tokens ``[B,X,Y,D]`` → features ``[B,F]``.

    ``"corners"``: concatenation of the tokens at (0,0), (0,Y−1), (X−1,0), (X−1,Y−1), F = 4D
    (paper Table 4: each corner is the end point of one of the four pLSTM orientations);
    ``"mean"``: the mean over all tokens, F = D.
    """
    if pooling == "corners":
        corners = (tokens[:, 0, 0], tokens[:, 0, -1], tokens[:, -1, 0], tokens[:, -1, -1])
        return torch.cat(corners, dim=-1)
    if pooling == "mean":
        return tokens.mean(dim=(1, 2))
    raise ValueError(f"pooling must be one of {list(POOLINGS)}, got {pooling!r}")


def pooled_dim(dim: int, pooling: str) -> int:
    """The feature width F that :func:`pool_tokens` gives for token width D = ``dim``."""
    if pooling not in POOLINGS:
        raise ValueError(f"pooling must be one of {list(POOLINGS)}, got {pooling!r}")
    return 4 * dim if pooling == "corners" else dim


class IsotropicVisionModel(nn.Module):
    """The shared classifier: images ``[B,C,H,W]`` → logits ``[B,num_classes]``.

    ``mixer_factory(i)`` builds the token mixer of block i (``[B,X,Y,D]`` → ``[B,X,Y,D]``).
    ``stem`` picks the token embedding (:data:`STEMS`), ``head_norm`` "batch" puts a BatchNorm
    on the pooled features before the linear head (it removes what every image shares, e.g. a
    blank background, so the head sees the differences from the first step on); "token-batch"
    puts it on every token before pooling instead (statistics over batch × tokens, which do not
    shift when a larger image brings more tokens into a mean). ``depth`` 0 = no blocks (the
    stem + pooling + head control).
    Subclasses set ``self._config`` (every constructor argument) for :attr:`config`.
    Linear layers of the MLPs, attention mixers and head and the position embedding are
    initialised with a truncated normal (std 0.02, zero bias); mixers of other types keep
    their own initialisation (the pLSTM layer's Table 4 gate init).
    """

    _config: dict

    def __init__(
        self,
        *,
        img_size: int,
        patch_size: int,
        in_chans: int,
        num_classes: int,
        dim: int,
        depth: int,
        mixer_factory: Callable[[int], nn.Module],
        pooling: str,
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
        super().__init__()
        if head_norm not in HEAD_NORMS:
            raise ValueError(f"head_norm must be one of {list(HEAD_NORMS)}, got {head_norm!r}")
        if stem not in STEMS:
            raise ValueError(f"stem must be one of {list(STEMS)}, got {stem!r}")
        for what, value in (
            ("patch_size", patch_size),
            ("in_chans", in_chans),
            ("num_classes", num_classes),
            ("dim", dim),
        ):
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{what} must be a positive integer, got {value!r}")
        if isinstance(depth, bool) or not isinstance(depth, int) or depth < 0:
            raise ValueError(f"depth must be a non-negative integer, got {depth!r}")
        numbers = all(
            isinstance(v, int | float) and not isinstance(v, bool) for v in (input_mean, input_std)
        )
        if (
            not (numbers and math.isfinite(input_mean) and math.isfinite(input_std))
            or input_std <= 0
        ):
            raise ValueError(
                f"input_mean must be a finite number and input_std a positive one, "
                f"got {input_mean!r}, {input_std!r}"
            )
        if not isinstance(img_size, int) or img_size < patch_size or img_size % patch_size:
            raise ValueError(
                f"img_size ({img_size}) must be a positive multiple of patch_size ({patch_size})"
            )
        self.pooling = pooling
        self.num_features = pooled_dim(dim, pooling)
        self.num_classes = num_classes
        self.dim = dim
        self.img_size = img_size
        self.input_mean = float(input_mean)
        self.input_std = float(input_std)
        grid = img_size // patch_size
        self.patch_embed = STEMS[stem](patch_size, in_chans, dim)
        self.pos_embed = nn.Parameter(torch.zeros(1, grid, grid, dim)) if use_pos_embed else None
        self._pos_cache: dict[tuple, torch.Tensor] = {}
        rates = [drop_path_rate * i / max(depth - 1, 1) for i in range(depth)]
        self.blocks = nn.ModuleList(
            Block(dim, mixer_factory(i), mlp_ratio, layer_scale, rates[i], eps)
            for i in range(depth)
        )
        self.norm = RMSNorm(dim, eps)
        self.head_norm = (
            nn.BatchNorm1d(self.num_features) if head_norm == "batch" else nn.Identity()
        )
        self.token_norm = nn.BatchNorm1d(dim) if head_norm == "token-batch" else None
        self.head = nn.Linear(self.num_features, num_classes)
        self._init_weights()

    def _init_weights(self) -> None:
        if self.pos_embed is not None:
            nn.init.trunc_normal_(self.pos_embed, std=0.02)
        owned = [m for m in self.modules() if isinstance(m, Mlp | AttentionMixer)]
        for module in [*owned, self.head]:
            for lin in module.modules():
                if isinstance(lin, nn.Linear):
                    nn.init.trunc_normal_(lin.weight, std=0.02)
                    if lin.bias is not None:
                        nn.init.zeros_(lin.bias)

    @property
    def config(self) -> dict:
        """Every constructor argument (JSON-serialisable): ``type(self)(**config)`` rebuilds."""
        return dict(self._config)

    @property
    def patch_size(self) -> int:
        return self.patch_embed.patch_size

    def position_embedding(self, grid: tuple[int, int], dtype: torch.dtype) -> torch.Tensor:
        """The position embedding ``[1,X,Y,D]`` for ``grid`` in ``dtype``. In inference mode
        the resized, cast embedding is kept per (grid, dtype) until the parameter is replaced or
        changed in place (its version counter), so a forward at a fixed size does no
        interpolation. Not under ``no_grad`` alone: an optimizer step replayed from a CUDA graph
        (``plstm train``) changes the parameter without bumping its version, and a validation
        pass between such steps would see a stale embedding."""
        assert self.pos_embed is not None
        if not torch.is_inference_mode_enabled():
            return resize_pos_embed(self.pos_embed, grid).to(dtype)
        key = (grid, dtype, self.pos_embed.data_ptr(), self.pos_embed._version)
        cached = self._pos_cache.get(key)
        if cached is None:
            if len(self._pos_cache) >= 8:
                self._pos_cache.clear()
            cached = resize_pos_embed(self.pos_embed.detach(), grid).to(dtype)
            self._pos_cache[key] = cached
        return cached

    def forward_tokens(self, x: torch.Tensor) -> torch.Tensor:
        """images ``[B,C,H,W]`` → normalised tokens ``[B,X,Y,D]`` after the last block."""
        if self.input_mean != 0.0 or self.input_std != 1.0:
            x = (x - self.input_mean) / self.input_std
        t = self.patch_embed(x)
        if self.pos_embed is not None:
            t = t + self.position_embedding((t.shape[1], t.shape[2]), t.dtype)
        for block in self.blocks:
            t = block(t)
        return self.norm(t)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """images ``[B,C,H,W]`` → pooled features ``[B,F]`` (F = 4D corners, D mean)."""
        tokens = self.forward_tokens(x)
        if self.token_norm is not None:
            tokens = self.token_norm(tokens.flatten(0, 2)).view_as(tokens)
        return pool_tokens(tokens, self.pooling)

    def forward_head(self, features: torch.Tensor) -> torch.Tensor:
        """features ``[B,F]`` → logits ``[B,num_classes]``."""
        if features.dim() != 2 or features.shape[-1] != self.num_features:
            raise ValueError(
                f"features must have shape [B,{self.num_features}], got {tuple(features.shape)}"
            )
        return self.head(self.head_norm(features))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """images ``[B,C,H,W]`` → logits ``[B,num_classes]``."""
        return self.forward_head(self.forward_features(x))
