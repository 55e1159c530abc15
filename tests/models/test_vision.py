"""PLSTMVision and ViT: position-embedding resizing, input checks, method switching, pooling,
P/D alternation, LayerScale, stochastic depth, the attention mixer and RMSNorm by value."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from models import PLSTMVision, ViT
from models.backbone import (
    AttentionMixer,
    DropPath,
    LayerScale,
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
        ({"depth": 0}, "depth must be a positive integer"),
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
