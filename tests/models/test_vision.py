"""PLSTMVision and ViT: position-embedding resizing, input checks, method switching, pooling,
P/D alternation, LayerScale, stochastic depth, the attention mixer and RMSNorm by value, input
standardisation, the convolutional stem (ConvStem, ChannelRMSNorm) and the BatchNorm head."""

from __future__ import annotations

import json
import math

import pytest
import torch
import torch.nn.functional as F

from models import PLSTMVision, ViT
from models.backbone import (
    HEAD_NORMS,
    STEMS,
    AttentionMixer,
    ChannelRMSNorm,
    ConvStem,
    DropPath,
    IsotropicVisionModel,
    LayerScale,
    PatchEmbed,
    RMSNorm,
    pool_tokens,
    resize_pos_embed,
)
from tests.models.test_registry import randomize_gates

TINY = {"dim": 32, "depth": 2, "num_heads": 2, "img_size": 32, "patch_size": 8, "num_classes": 5}


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _images(seed: int, size: tuple[int, int] = (32, 32), batch: int = 2) -> torch.Tensor:
    return torch.randn(batch, 3, *size, generator=_gen(seed))


def _plstm(seed: int = 0, **overrides) -> PLSTMVision:
    torch.manual_seed(seed)
    model = PLSTMVision(**{**TINY, **overrides})
    randomize_gates(model, seed + 100)
    return model.eval()


def test_pos_embed_is_unchanged_at_the_training_grid() -> None:
    pe = torch.randn(1, 4, 4, 8, generator=_gen(0))
    assert resize_pos_embed(pe, (4, 4)) is pe
    # The bicubic path is the identity there too (align_corners=False samples pixel centres).
    same = F.interpolate(pe.permute(0, 3, 1, 2), size=(4, 4), mode="bicubic", align_corners=False)
    torch.testing.assert_close(same.permute(0, 2, 3, 1), pe, rtol=0, atol=1e-6)


def test_pos_embed_resizing_keeps_axes_and_constants() -> None:
    const = torch.full((1, 4, 4, 3), 0.7)
    torch.testing.assert_close(resize_pos_embed(const, (6, 9)), torch.full((1, 6, 9, 3), 0.7))

    profile = torch.randn(4, generator=_gen(1))
    along_x = profile.view(1, 4, 1, 1).expand(1, 4, 4, 2).contiguous()  # varies along X only
    out = resize_pos_embed(along_x, (6, 5))
    assert out.shape == (1, 6, 5, 2)
    torch.testing.assert_close(out, out[:, :, :1].expand_as(out))  # still constant along Y
    expected = F.interpolate(
        profile.view(1, 1, 4, 1), size=(6, 1), mode="bicubic", align_corners=False
    ).view(6)
    torch.testing.assert_close(out[0, :, 0, 0], expected)
    assert out[0, :, 0, 0].std() > 0.1 * profile.std()


def test_model_uses_the_resized_pos_embed() -> None:
    model = _plstm()
    x = _images(2, size=(48, 40))
    with torch.no_grad():
        t = model.patch_embed(x)  # [2,6,5,D]
        t = t + resize_pos_embed(model.pos_embed, (6, 5))
        for block in model.blocks:
            t = block(t)
        torch.testing.assert_close(model.forward_tokens(x), model.norm(t), rtol=0, atol=0)
        # without the embedding the result differs: the embedding is really added
        model_no_pe = _plstm(use_pos_embed=False)
        assert model_no_pe.pos_embed is None
        state = {k: v for k, v in model.state_dict().items() if k != "pos_embed"}
        model_no_pe.load_state_dict(state, strict=True)
        assert not torch.allclose(model_no_pe(x), model(x), atol=1e-4)


@pytest.mark.parametrize(
    ("shape", "match"),
    [
        ((2, 3, 30, 32), "image size 30x32 .* patch size 8"),
        ((2, 3, 32, 36), "image size 32x36 .* patch size 8"),
        ((2, 3, 4, 32), "image size 4x32 .* patch size 8"),
        ((2, 1, 32, 32), "3 channels, got 1"),
        ((3, 32, 32), r"shape \[B,C,H,W\], got \(3, 32, 32\)"),
        ((0, 3, 32, 32), "batch is empty"),
    ],
)
@pytest.mark.parametrize("cls", [PLSTMVision, ViT])
def test_bad_image_sizes_are_rejected(cls: type, shape: tuple, match: str) -> None:
    model = cls(**TINY)
    with pytest.raises(ValueError, match=match):
        model(torch.randn(shape, generator=_gen(3)))


@pytest.mark.parametrize(
    ("overrides", "match"),
    [
        ({"img_size": 36}, r"img_size \(36\) must be a positive multiple of patch_size \(8\)"),
        ({"pooling": "max"}, "pooling must be one of"),
        ({"method": "magic"}, "method must be one of"),
        ({"mode_pattern": "PU"}, "mode_pattern"),
        ({"num_heads": 3}, "multiple of num_heads"),
        ({"depth": -1}, "depth must be a non-negative integer"),
    ],
)
def test_bad_constructor_arguments_are_rejected(overrides: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        PLSTMVision(**{**TINY, **overrides})


@pytest.mark.parametrize("size", [(32, 32), (40, 24)])
def test_set_method_gives_the_same_logits(size: tuple[int, int]) -> None:
    model = _plstm(seed=4)
    x = _images(5, size=size)
    with torch.no_grad():
        reference = model(x)
        for method in ("recurrent", "chunkwise", "fused", "parallel"):
            model.set_method(method, chunk_size=2)  # several chunks; 2 does not divide 5 or 3
            assert model.config["method"] == method and model.config["chunk_size"] == 2
            assert all(layer.method == method for layer in model.plstm_layers())
            logits = model(x)
            err = (logits - reference).abs().max().item()
            assert err <= 1e-4 * reference.abs().max().item(), (method, err)
    with pytest.raises(ValueError, match="method must be one of"):
        model.set_method("magic")


def test_methods_agree_on_gradients() -> None:
    x = _images(6)
    grads = {}
    for method in ("parallel", "recurrent"):
        model = _plstm(seed=5, method=method).train()
        model(x).square().sum().backward()
        grads[method] = torch.cat([p.grad.flatten() for p in model.parameters()])
    scale = grads["recurrent"].abs().max()
    assert (grads["parallel"] - grads["recurrent"]).abs().max() <= 1e-3 * scale


def test_modes_alternate_p_and_d() -> None:
    model = PLSTMVision(**{**TINY, "depth": 4})
    assert [layer.mode for layer in model.plstm_layers()] == ["P", "D", "P", "D"]
    model = PLSTMVision(**{**TINY, "depth": 3, "mode_pattern": "D"})
    assert [layer.mode for layer in model.plstm_layers()] == ["D", "D", "D"]


@pytest.mark.parametrize("cls", [PLSTMVision, ViT])
def test_pooling_variants(cls: type) -> None:
    x = _images(7, size=(40, 24))  # a 5×3 token grid
    for pooling, width in (("corners", 4 * TINY["dim"]), ("mean", TINY["dim"])):
        torch.manual_seed(8)
        model = cls(**{**TINY, "pooling": pooling}).eval()
        assert model.head.in_features == width == model.num_features
        with torch.no_grad():
            tokens = model.forward_tokens(x)
            assert tokens.shape == (2, 5, 3, TINY["dim"])
            features = model.forward_features(x)
        if pooling == "corners":
            expected = torch.cat(
                [tokens[:, 0, 0], tokens[:, 0, 2], tokens[:, 4, 0], tokens[:, 4, 2]], dim=-1
            )
        else:
            expected = tokens.mean(dim=(1, 2))
        torch.testing.assert_close(features, expected, rtol=0, atol=0)
    assert ViT(**{k: v for k, v in TINY.items()}).pooling == "mean"
    assert PLSTMVision(**TINY).pooling == "corners"
    with pytest.raises(ValueError, match="pooling must be one of"):
        pool_tokens(tokens, "max")


def test_layer_scale_one_equals_no_layer_scale() -> None:
    with_ls = _plstm(seed=9, layer_scale=1.0)
    gammas = [m.gamma for m in with_ls.modules() if isinstance(m, LayerScale)]
    assert len(gammas) == 2 * TINY["depth"]
    assert all(torch.equal(g, torch.ones(TINY["dim"])) for g in gammas)
    plain = PLSTMVision(**TINY).eval()
    assert not any(isinstance(m, LayerScale) for m in plain.modules())
    state = {k: v for k, v in with_ls.state_dict().items() if ".ls" not in k}
    plain.load_state_dict(state, strict=True)
    x = _images(10)
    with torch.no_grad():
        torch.testing.assert_close(plain(x), with_ls(x), rtol=0, atol=0)
    small = PLSTMVision(**{**TINY, "layer_scale": 1e-4})
    assert all(
        torch.allclose(m.gamma, torch.full((TINY["dim"],), 1e-4))
        for m in small.modules()
        if isinstance(m, LayerScale)
    )


def test_drop_path() -> None:
    x = torch.randn(64, 3, 4, generator=_gen(11))
    drop = DropPath(0.5)
    assert drop.eval()(x) is x
    torch.manual_seed(12)
    y = drop.train()(x)
    kept = (y != 0).flatten(1).all(dim=1)
    dropped = (y == 0).flatten(1).all(dim=1)
    assert bool((kept | dropped).all())  # whole samples are dropped or kept
    assert 10 < int(kept.sum()) < 54
    torch.testing.assert_close(y[kept], 2 * x[kept])
    with pytest.raises(ValueError, match="drop path rate"):
        DropPath(1.0)
    model = PLSTMVision(**{**TINY, "depth": 3, "drop_path_rate": 0.2})
    assert [b.drop_path.rate for b in model.blocks] == pytest.approx([0.0, 0.1, 0.2])


def test_attention_mixer_matches_softmax_attention() -> None:
    torch.manual_seed(13)
    mixer = AttentionMixer(dim=12, num_heads=3)
    x = torch.randn(2, 3, 4, 12, generator=_gen(14))
    out = mixer(x)
    tokens = x.reshape(2, 12, 12)
    q, k, v = mixer.qkv(tokens).split(12, dim=-1)

    def heads(t: torch.Tensor) -> torch.Tensor:
        return t.reshape(2, 12, 3, 4).transpose(1, 2)  # [B,H,N,K]

    att = torch.softmax(heads(q) @ heads(k).transpose(-1, -2) / math.sqrt(4), dim=-1)
    expected = mixer.proj((att @ heads(v)).transpose(1, 2).reshape(2, 12, 12))
    torch.testing.assert_close(out, expected.reshape(2, 3, 4, 12), rtol=1e-5, atol=1e-6)


def test_rms_norm_values_and_dtypes() -> None:
    norm = RMSNorm(6, eps=1e-5)
    with torch.no_grad():
        norm.weight.copy_(torch.randn(6, generator=_gen(15)))
    x = 3 * torch.randn(4, 6, generator=_gen(16), dtype=torch.float64)
    expected = x / torch.sqrt(x.pow(2).mean(-1, keepdim=True) + 1e-5) * norm.weight.double()
    torch.testing.assert_close(norm(x), expected)
    out = norm(x.bfloat16())
    assert out.dtype == torch.bfloat16
    torch.testing.assert_close(out.double(), expected, rtol=2e-2, atol=2e-2)


def test_bf16_model_stays_close_to_fp32() -> None:
    model = _plstm(seed=17)
    x = _images(18)
    with torch.no_grad():
        ref = model(x)
        out = model.to(torch.bfloat16)(x.bfloat16())
    assert out.dtype == torch.bfloat16
    assert (out.float() - ref).abs().max() <= 0.1 * ref.abs().max()


def _standardising_pair(cls: type, seed: int, mean: float, std: float) -> tuple:
    """(model with input_mean/std, the same weights with the defaults 0 / 1), both in eval."""
    torch.manual_seed(seed)
    model = cls(**TINY, input_mean=mean, input_std=std)
    if cls is PLSTMVision:
        randomize_gates(model, seed + 100)
    plain = cls(**TINY)
    plain.load_state_dict(model.state_dict(), strict=True)
    return model.eval(), plain.eval()


@pytest.mark.parametrize("cls", [PLSTMVision, ViT])
def test_input_standardisation_equals_standardised_input(cls: type) -> None:
    gen = _gen(20)
    mean = 0.2 + 0.7 * torch.rand((), generator=gen).item()
    std = 0.1 + 0.3 * torch.rand((), generator=gen).item()
    model, plain = _standardising_pair(cls, 21, mean, std)
    assert (model.input_mean, model.input_std) == (mean, std)
    assert (plain.input_mean, plain.input_std) == (0.0, 1.0)
    x = torch.rand(2, 3, 32, 32, generator=gen)
    with torch.no_grad():
        out = model(x)
        expected = plain((x - mean) / std)
        unstandardised = plain(x)
    assert torch.allclose(out, expected, rtol=1e-6, atol=1e-6)
    assert not torch.allclose(out, unstandardised, atol=1e-3)  # the shift really happens
    # at another token grid too (the standardisation is per pixel, not per stored size)
    x = torch.rand(1, 3, 40, 24, generator=gen)
    with torch.no_grad():
        assert torch.allclose(model(x), plain((x - mean) / std), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("cls", [PLSTMVision, ViT])
def test_input_statistics_survive_the_config_round_trip(cls: type) -> None:
    model, _ = _standardising_pair(cls, 22, 0.875, 0.3125)
    config = json.loads(json.dumps(model.config))
    assert config["input_mean"] == 0.875 and config["input_std"] == 0.3125
    rebuilt = cls(**config).eval()
    assert (rebuilt.input_mean, rebuilt.input_std) == (0.875, 0.3125)
    rebuilt.load_state_dict(model.state_dict(), strict=True)
    x = torch.rand(2, 3, 32, 32, generator=_gen(23))
    with torch.no_grad():
        torch.testing.assert_close(rebuilt(x), model(x), rtol=0, atol=0)
    defaults = cls(**TINY).config
    assert defaults["input_mean"] == 0.0 and defaults["input_std"] == 1.0


@pytest.mark.parametrize(
    ("overrides", "match"),
    [
        ({"input_std": 0.0}, "input_std"),
        ({"input_std": -0.5}, "input_std"),
        ({"input_std": math.inf}, "input_std|JSON"),
        ({"input_std": math.nan}, "input_std|JSON"),
        ({"input_mean": math.nan}, "input_mean|JSON"),
        ({"input_mean": -math.inf}, "input_mean|JSON"),
    ],
)
@pytest.mark.parametrize("cls", [PLSTMVision, ViT])
def test_bad_input_statistics_are_rejected(cls: type, overrides: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        cls(**TINY, **overrides)


@pytest.mark.parametrize(
    "overrides",
    [
        {"input_std": 0.0},
        {"input_std": math.nan},
        {"input_mean": math.inf},
        {"input_std": -1.0},
        {"input_std": "1"},
        {"input_mean": True},
    ],
)
def test_backbone_rejects_bad_input_statistics(overrides: dict) -> None:
    # The backbone's own check, without the subclasses' JSON check in front of it.
    settings = {k: v for k, v in TINY.items() if k != "num_heads"} | {"in_chans": 3}
    with pytest.raises(ValueError, match="input_mean must be a finite number and input_std a pos"):
        IsotropicVisionModel(
            **settings, mixer_factory=lambda i: torch.nn.Identity(), pooling="mean", **overrides
        )
    model = IsotropicVisionModel(
        **settings, mixer_factory=lambda i: torch.nn.Identity(), pooling="mean", input_std=2.0
    )
    assert model.input_std == 2.0 and model.input_mean == 0.0


# --- the convolutional stem and the BatchNorm head ------------------------------------------


def test_channel_rms_norm_matches_a_per_pixel_loop() -> None:
    norm = ChannelRMSNorm(5, eps=1e-5)
    with torch.no_grad():
        norm.weight.copy_(torch.randn(5, generator=_gen(30)))
    x = 3 * torch.randn(2, 5, 3, 4, generator=_gen(31))
    out = norm(x)
    assert out.shape == x.shape and out.dtype == torch.float32
    xd, w = x.double(), norm.weight.detach().double()
    expected = torch.empty_like(xd)
    for b in range(2):
        for i in range(3):
            for j in range(4):
                pixel = xd[b, :, i, j]
                expected[b, :, i, j] = pixel / math.sqrt(pixel.pow(2).mean() + 1e-5) * w
    torch.testing.assert_close(out.double(), expected, rtol=1e-6, atol=1e-6)
    half = norm(x.bfloat16())
    assert half.dtype == torch.bfloat16
    torch.testing.assert_close(half.double(), expected, rtol=2e-2, atol=5e-2)


def _convs(stem: ConvStem) -> list[torch.nn.Conv2d]:
    return [m for m in stem.proj if isinstance(m, torch.nn.Conv2d)]


@pytest.mark.parametrize(
    ("patch", "dim", "widths"),
    [
        (2, 16, [16]),
        (4, 48, [32, 48]),
        (8, 200, [32, 64, 128]),
        (16, 200, [32, 64, 128, 200]),
        (16, 24, [24, 24, 24, 24]),
    ],
)
def test_conv_stem_layers_follow_the_documented_widths(
    patch: int, dim: int, widths: list[int]
) -> None:
    stem = ConvStem(patch, 1, dim)
    convs = _convs(stem)
    *strided, last = convs
    assert len(strided) == int(math.log2(patch))
    assert [c.out_channels for c in strided] == widths
    assert [c.in_channels for c in strided] == [1, *widths[:-1]]
    assert all(c.kernel_size == (3, 3) and c.stride == (2, 2) for c in strided)
    assert all(c.padding == (1, 1) for c in strided)
    assert (last.in_channels, last.out_channels, last.kernel_size) == (widths[-1], dim, (1, 1))
    norms = [m for m in stem.proj if isinstance(m, ChannelRMSNorm)]
    assert [n.weight.numel() for n in norms] == widths
    assert sum(isinstance(m, torch.nn.GELU) for m in stem.proj) == len(widths)
    # each strided conv is followed by its norm and a GELU, the 1x1 projection ends the stem
    kinds = [type(m) for m in stem.proj]
    assert kinds == [torch.nn.Conv2d, ChannelRMSNorm, torch.nn.GELU] * len(widths) + [
        torch.nn.Conv2d
    ]
    assert stem.patch_size == patch and stem.in_chans == 1


@pytest.mark.parametrize("patch", [2, 4, 8, 16])
def test_conv_stem_token_grid(patch: int) -> None:
    torch.manual_seed(32)
    stem = ConvStem(patch, 3, 24)
    x = torch.randn(2, 3, 3 * patch, 2 * patch, generator=_gen(33))  # H != W
    tokens = stem(x)
    assert tokens.shape == (2, 3, 2, 24)
    assert torch.isfinite(tokens).all()
    square = stem(torch.randn(1, 3, 4 * patch, 4 * patch, generator=_gen(34)))
    assert square.shape == (1, 4, 4, 24)


@pytest.mark.parametrize("patch", [0, 1, 3, 6, 12])
def test_conv_stem_needs_a_power_of_two_patch(patch: int) -> None:
    with pytest.raises(ValueError, match=f"power-of-two patch size, got {patch}"):
        ConvStem(patch, 3, 16)


@pytest.mark.parametrize(
    "shape",
    [(2, 3, 30, 32), (2, 3, 32, 36), (2, 3, 4, 32), (2, 1, 32, 32), (3, 32, 32), (0, 3, 32, 32)],
)
def test_conv_stem_rejects_bad_images_like_the_patch_stem(shape: tuple) -> None:
    x = torch.zeros(shape)
    messages = []
    for cls in (PatchEmbed, ConvStem):
        with pytest.raises(ValueError) as info:
            cls(8, 3, 16)(x)
        messages.append(str(info.value))
    assert messages[0] == messages[1]


@pytest.mark.parametrize(("patch", "size"), [(4, (32, 24)), (8, (64, 48))])
def test_conv_stem_is_translation_equivariant(patch: int, size: tuple[int, int]) -> None:
    """Shifting the image by one patch shifts the tokens by one position. The background is
    zero (the convolutions' padding value), so torch.roll's wrap-around moves only zeros; the
    first token row / column see the later layers' zero padding and are left out."""
    torch.manual_seed(35)
    stem = ConvStem(patch, 3, 16).eval()
    height, width = size
    x = torch.zeros(2, 3, height, width)
    x[:, :, patch : height - 2 * patch, patch : width - 2 * patch] = torch.randn(
        2, 3, height - 3 * patch, width - 3 * patch, generator=_gen(36)
    )
    shifted = torch.roll(x, shifts=(patch, patch), dims=(2, 3))
    with torch.no_grad():
        tokens, moved = stem(x), stem(shifted)
    torch.testing.assert_close(moved[:, 2:, 2:], tokens[:, 1:-1, 1:-1], rtol=1e-5, atol=1e-5)
    # the comparison has teeth: the tokens vary, so an unshifted grid does not match
    assert (moved[:, 2:, 2:] - tokens[:, 2:, 2:]).abs().max() > 0.1


def _randomize_batch_norm(bn: torch.nn.BatchNorm1d, seed: int) -> None:
    """Random running statistics and affine parameters, as after some training."""
    gen = _gen(seed)
    with torch.no_grad():
        bn.running_mean.copy_(0.1 * torch.randn(bn.num_features, generator=gen))
        bn.running_var.copy_(0.5 + torch.rand(bn.num_features, generator=gen))
        bn.weight.copy_(1 + 0.3 * torch.randn(bn.num_features, generator=gen))
        bn.bias.copy_(0.3 * torch.randn(bn.num_features, generator=gen))
        bn.num_batches_tracked.fill_(7)


def _stem_model(cls: type, seed: int = 40, **overrides) -> IsotropicVisionModel:
    """A tiny model with the conv stem and the BatchNorm head, random head BatchNorm statistics
    and affine parameters (and random pLSTM gates), in eval mode."""
    torch.manual_seed(seed)
    model = cls(**{**TINY, "stem": "conv", "head_norm": "batch", **overrides})
    if cls is PLSTMVision:
        randomize_gates(model, seed + 100)
    _randomize_batch_norm(model.head_norm, seed + 200)
    return model.eval()


@pytest.mark.parametrize("cls", [PLSTMVision, ViT])
def test_stem_and_head_norm_choices(cls: type) -> None:
    assert STEMS["patch"] is PatchEmbed and STEMS["conv"] is ConvStem and len(STEMS) == 3
    assert HEAD_NORMS == ("none", "batch", "token-batch")
    plain = cls(**TINY)
    assert (plain.config["stem"], plain.config["head_norm"]) == ("patch", "none")
    assert type(plain.patch_embed) is PatchEmbed
    assert isinstance(plain.head_norm, torch.nn.Identity)
    model = _stem_model(cls)
    assert (model.config["stem"], model.config["head_norm"]) == ("conv", "batch")
    assert type(model.patch_embed) is ConvStem and model.patch_size == TINY["patch_size"]
    assert isinstance(model.head_norm, torch.nn.BatchNorm1d)
    assert model.head_norm.num_features == model.num_features == model.head.in_features
    bn_stem = cls(**{**TINY, "stem": "conv-bn"})
    assert type(bn_stem.patch_embed) is STEMS["conv-bn"]
    assert bn_stem(torch.rand(3, 3, 32, 32, generator=_gen(42))).shape == (3, TINY["num_classes"])


@pytest.mark.parametrize("cls", [PLSTMVision, ViT])
@pytest.mark.parametrize(
    ("overrides", "match"),
    [
        ({"stem": "conv3"}, r"stem must be one of \['patch', 'conv', 'conv-bn'\], got 'conv3'"),
        (
            {"head_norm": "layer"},
            r"head_norm must be one of \['none', 'batch', 'token-batch'\], got 'layer'",
        ),
        ({"stem": "conv", "patch_size": 6, "img_size": 36}, "power-of-two patch size, got 6"),
    ],
)
def test_bad_stem_or_head_norm_is_rejected(cls: type, overrides: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        cls(**{**TINY, **overrides})


@pytest.mark.parametrize("cls", [PLSTMVision, ViT])
def test_conv_stem_model_runs_at_two_resolutions(cls: type) -> None:
    model = _stem_model(cls)
    with torch.no_grad():
        for size, grid in (((32, 32), (4, 4)), ((48, 40), (6, 5))):
            x = _images(41, size=size, batch=3)
            assert model.forward_tokens(x).shape == (3, *grid, TINY["dim"])
            logits = model(x)
            assert logits.shape == (3, TINY["num_classes"]) and torch.isfinite(logits).all()
            # eval mode: the BatchNorm uses its running statistics, samples stay independent
            torch.testing.assert_close(model(x[1:2]), logits[1:2], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("cls", [PLSTMVision, ViT])
def test_batch_head_norm_in_eval_is_the_affine_map_of_the_running_statistics(cls: type) -> None:
    model = _stem_model(cls)
    bn = model.head_norm
    x = _images(42, size=(40, 24))
    with torch.no_grad():
        features = model.forward_features(x)
        normed = (features - bn.running_mean) / torch.sqrt(bn.running_var + bn.eps)
        expected = (normed * bn.weight + bn.bias) @ model.head.weight.T + model.head.bias
        torch.testing.assert_close(model.forward_head(features), expected, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(model(x), expected, rtol=1e-5, atol=1e-5)
        # the statistics really matter: the plain linear head gives other logits
        assert not torch.allclose(model.head(features), expected, atol=1e-3)
    assert int(bn.num_batches_tracked) == 7  # eval mode leaves the statistics alone


@pytest.mark.parametrize("cls", [PLSTMVision, ViT])
def test_conv_stem_model_gradients_reach_every_parameter(cls: type) -> None:
    model = _stem_model(cls).train()
    running_mean = model.head_norm.running_mean.clone()
    # batch 4: with only 2 samples a BatchNorm output is ±1 whatever its input
    model(_images(43, batch=4)).square().sum().backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name
    assert any(name.startswith("patch_embed.proj.") for name, _ in model.named_parameters())
    # train mode updates the running statistics
    assert int(model.head_norm.num_batches_tracked) == 8
    assert not torch.equal(model.head_norm.running_mean, running_mean)


@pytest.mark.parametrize("cls", [PLSTMVision, ViT])
def test_conv_stem_model_survives_the_config_round_trip(cls: type) -> None:
    model = _stem_model(cls)
    config = json.loads(json.dumps(model.config))
    assert config["stem"] == "conv" and config["head_norm"] == "batch"
    rebuilt = cls(**config)
    assert type(rebuilt.patch_embed) is ConvStem
    assert isinstance(rebuilt.head_norm, torch.nn.BatchNorm1d)
    state = model.state_dict()
    assert {"head_norm.running_mean", "head_norm.running_var", "patch_embed.proj.0.weight"} <= set(
        state
    )
    rebuilt.load_state_dict(state, strict=True)
    rebuilt.eval()
    x = _images(44, size=(32, 40))
    with torch.no_grad():
        torch.testing.assert_close(rebuilt(x), model(x), rtol=0, atol=0)


def test_batchnorm_conv_stem_swaps_only_the_norm() -> None:
    rms, bn = ConvStem(8, 1, 48), STEMS["conv-bn"](8, 1, 48)
    assert [type(m) for m in bn.proj] == [
        torch.nn.BatchNorm2d if isinstance(m, ChannelRMSNorm) else type(m) for m in rms.proj
    ]
    assert [m.num_features for m in bn.proj if isinstance(m, torch.nn.BatchNorm2d)] == [32, 48, 48]
    x = torch.rand(4, 1, 32, 24, generator=_gen(41))
    # train mode normalises each channel over batch and pixels: zero mean, unit variance
    first = bn.proj[1](bn.proj[0](x))
    torch.testing.assert_close(first.mean(dim=(0, 2, 3)), torch.zeros(32), atol=1e-5, rtol=0)
    torch.testing.assert_close(
        first.var(dim=(0, 2, 3), unbiased=False), torch.ones(32), atol=1e-3, rtol=0
    )
    assert bn(x).shape == (4, 4, 3, 48)
    with pytest.raises(ValueError, match="conv stem norm must be one of"):
        ConvStem(8, 1, 48, norm="layer")


def test_position_embedding_is_cached_in_inference_mode_and_follows_the_weights() -> None:
    model = _plstm(seed=31)
    with torch.inference_mode():
        first = model.position_embedding((6, 5), torch.float32)
        assert model.position_embedding((6, 5), torch.float32) is first
    torch.testing.assert_close(first, resize_pos_embed(model.pos_embed.detach(), (6, 5)))
    with torch.no_grad():
        model.pos_embed.add_(1.0)
    with torch.inference_mode():
        moved = model.position_embedding((6, 5), torch.float32)
    torch.testing.assert_close(moved, first + 1.0)
    trained = model.position_embedding((6, 5), torch.float32)
    assert trained.requires_grad and trained is not moved


def test_validation_without_autograd_sees_updates_that_keep_the_version() -> None:
    """An optimizer step replayed from a CUDA graph changes the weights without bumping their
    version counter (``.data`` does the same here): a no_grad validation must see it."""
    model = _plstm(seed=32)
    with torch.no_grad():
        before = model.position_embedding((6, 5), torch.float32)
        version = model.pos_embed._version
        model.pos_embed.data.add_(1.0)
        assert model.pos_embed._version == version
        after = model.position_embedding((6, 5), torch.float32)
    torch.testing.assert_close(after, before + 1.0)


@pytest.mark.parametrize("cls", [PLSTMVision, ViT])
@pytest.mark.parametrize("pooling", ["mean", "corners"])
def test_token_batch_norm_normalises_every_token_before_pooling(cls: type, pooling: str) -> None:
    torch.manual_seed(50)
    model = cls(**{**TINY, "head_norm": "token-batch", "pooling": pooling})
    if cls is PLSTMVision:
        randomize_gates(model, 150)
    assert isinstance(model.head_norm, torch.nn.Identity)
    bn = model.token_norm
    assert isinstance(bn, torch.nn.BatchNorm1d) and bn.num_features == TINY["dim"]
    _randomize_batch_norm(bn, 51)
    model.eval()
    x = _images(52, size=(40, 48), batch=3)
    with torch.no_grad():
        tokens = model.forward_tokens(x).double()
        scale = bn.weight.double() / (bn.running_var.double() + bn.eps).sqrt()
        normed = (tokens - bn.running_mean.double()) * scale + bn.bias.double()
        head = model.head
        expected = F.linear(pool_tokens(normed, pooling), head.weight.double(), head.bias.double())
        torch.testing.assert_close(model(x), expected.float(), rtol=1e-4, atol=1e-5)


def test_without_token_batch_norm_there_is_no_token_norm() -> None:
    assert ViT(**{**TINY, "head_norm": "batch"}).token_norm is None


@pytest.mark.parametrize("cls", [PLSTMVision, ViT])
def test_depth_zero_is_stem_pooling_and_head(cls: type) -> None:
    torch.manual_seed(53)
    model = cls(**{**TINY, "depth": 0, "stem": "conv", "head_norm": "batch"})
    assert len(model.blocks) == 0
    _randomize_batch_norm(model.head_norm, 54)
    model.eval()
    x = _images(55, batch=3)
    with torch.no_grad():
        standardised = (x - model.input_mean) / model.input_std
        tokens = model.norm(model.patch_embed(standardised) + model.pos_embed)
        expected = model.head(model.head_norm(pool_tokens(tokens, model.pooling)))
        torch.testing.assert_close(model(x), expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("depth", [-1, 1.5, True])
def test_bad_depth_is_rejected(depth: object) -> None:
    with pytest.raises(ValueError, match="depth must be a non-negative integer"):
        ViT(**{**TINY, "depth": depth})
