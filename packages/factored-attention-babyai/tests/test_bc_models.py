"""The baseline policies (spec §6.1, §6.2) on synthetic tensors of the spec's shapes."""

from __future__ import annotations

import math

import pytest
import torch

from factored_attention_babyai.models.common import bc_loss, sinusoid_1d, sinusoid_2d
from factored_attention_babyai.models.film import FilmPolicy, WeightedBatchNorm2d, _FiLMBlock
from factored_attention_babyai.models.transformer_policy import TransformerPolicy

from .conftest import random_frames


@pytest.mark.parametrize("cls", [FilmPolicy, TransformerPolicy])
def test_output_shape(cls: type) -> None:
    torch.manual_seed(0)
    out = cls()(*random_frames(6))
    assert out.shape == (6, 7)
    assert torch.isfinite(out).all()


def test_film_outputs_log_probabilities() -> None:
    torch.manual_seed(0)
    out = FilmPolicy()(*random_frames(4))
    torch.testing.assert_close(out.exp().sum(-1), torch.ones(4))


def test_parameter_counts_follow_the_spec_layer_list() -> None:
    gru_dir = 3 * (64 * 128 + 64 * 64 + 2 * 64)
    conv = 128 * 128 * 9 + 128
    film_block = 2 * conv + 2 * 256 + 2 * (128 * 128 + 128)
    film = (
        16 * 128  # words
        + 2 * gru_dir
        + 64 * 128  # cells (4 channels × 16 rows)
        + 512 * 128 * 9
        + 128
        + 256  # conv0 + BN
        + conv
        + 256  # conv1 + BN
        + 2 * film_block
        + 128 * 64
        + 64
        + 64 * 7
        + 7  # actor
    )
    attn = 3 * 96 * 96 + 3 * 96 + 96 * 96 + 96
    ff = 96 * 192 + 192 + 192 * 96 + 96
    enc = attn + ff + 2 * 192
    dec = 2 * attn + ff + 3 * 192
    transformer = (
        32 * 96
        + 96 * 32  # words, cells
        + enc
        + 4 * dec
        + 96  # CLS
        + 4 * 32
        + 32 * 96
        + 96  # direction
        + 192 * 96
        + 96  # combine
        + 96 * 384
        + 384 * 7  # actor, no biases
    )
    assert sum(p.numel() for p in FilmPolicy().parameters()) == film == 1_488_903
    assert sum(p.numel() for p in TransformerPolicy().parameters()) == transformer == 591_296


def test_film_linear_rows_have_unit_norm_and_zero_bias() -> None:
    torch.manual_seed(0)
    model = FilmPolicy()
    blocks = [b for b in model.films if isinstance(b, _FiLMBlock)]
    for layer in (model.actor1, model.actor2, blocks[0].gamma, blocks[1].beta):
        torch.testing.assert_close(layer.weight.norm(dim=1), torch.ones(layer.out_features))
        assert layer.bias is not None
        assert not layer.bias.any()


def test_film_first_conv_by_lookup_equals_the_direct_convolution() -> None:
    torch.manual_seed(0)
    model = FilmPolicy()
    images, directions, _ = random_frames(5)
    n = images.shape[0]
    dirs = directions[:, None, None, None].expand(n, 8, 8, 1)
    cells = torch.cat((images.long(), dirs), dim=-1) + model.channel_offsets
    torch.testing.assert_close(
        model._first_conv(cells),
        model.reference_first_conv(images, directions),
        atol=1e-5,
        rtol=1e-5,
    )


def test_film_first_conv_by_lookup_has_the_direct_gradients() -> None:
    torch.manual_seed(0)
    model = FilmPolicy()
    images, directions, _ = random_frames(3)
    dirs = directions[:, None, None, None].expand(3, 8, 8, 1)
    cells = torch.cat((images.long(), dirs), dim=-1) + model.channel_offsets
    probe = torch.randn(3, 128, 8, 8)
    params = [model.conv0.weight, model.cell_embedding.weight]
    assert model.conv0.bias is not None
    params.append(model.conv0.bias)
    grads: list[list[torch.Tensor]] = []
    for out in (model._first_conv(cells), model.reference_first_conv(images, directions)):
        model.zero_grad()
        (out * probe).sum().backward()
        grads.append([torch.zeros(0) if p.grad is None else p.grad.clone() for p in params])
    for a, b in zip(*grads, strict=True):
        torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4)


def test_weighted_batch_norm_equals_repeated_samples() -> None:
    torch.manual_seed(0)
    x = torch.randn(3, 4, 2, 2)
    counts = torch.tensor([1, 3, 2])
    a, b = WeightedBatchNorm2d(4), WeightedBatchNorm2d(4)
    out_w = a(x, counts)
    out_r = b(x.repeat_interleave(counts, dim=0))
    torch.testing.assert_close(out_w.repeat_interleave(counts, dim=0), out_r)
    torch.testing.assert_close(a.running_mean, b.running_mean)
    torch.testing.assert_close(a.running_var, b.running_var)


def test_deduplicated_padding_gives_the_full_batch_loss_and_gradients() -> None:
    """One padding frame with weight k stands for k identical padding frames (FiLM's BN too)."""
    images, directions, missions = random_frames(4)
    actions = torch.randint(0, 7, (4,))
    pad_img = torch.zeros(1, 8, 8, 3, dtype=torch.uint8)
    # full batch: 4 valid frames + 3 identical padding frames of mission 0
    full = (
        torch.cat((images, pad_img.expand(3, -1, -1, -1))),
        torch.cat((directions, torch.zeros(3, dtype=torch.long))),
        torch.cat((missions, missions[:1].expand(3, -1))),
    )
    full_actions = torch.cat((actions, torch.zeros(3, dtype=torch.long)))
    full_valid = torch.tensor([True] * 4 + [False] * 3)
    dedup = tuple(t[:5] for t in full)
    weights = torch.tensor([1.0, 1, 1, 1, 3])
    for cls in (FilmPolicy, TransformerPolicy):
        torch.manual_seed(0)
        m1 = cls()
        torch.manual_seed(0)
        m2 = cls()
        loss1, _, _ = bc_loss(m1(*full), full_actions, full_valid)
        loss2, _, _ = bc_loss(
            m2(*dedup, frame_weights=weights), full_actions[:5], full_valid[:5], weights
        )
        torch.testing.assert_close(loss1, loss2, atol=1e-5, rtol=1e-5)
        loss1.backward()
        loss2.backward()
        for p1, p2 in zip(m1.parameters(), m2.parameters(), strict=True):
            assert p1.grad is not None
            assert p2.grad is not None
            torch.testing.assert_close(p1.grad, p2.grad, atol=1e-4, rtol=1e-3)


def test_sinusoid_1d_matches_hand_computed_values() -> None:
    pe = sinusoid_1d(3, 4)
    f1 = 10000 ** (-2 / 4)
    expected = torch.tensor(
        [
            [0.0, 1.0, 0.0, 1.0],
            [math.sin(1), math.cos(1), math.sin(f1), math.cos(f1)],
            [math.sin(2), math.cos(2), math.sin(2 * f1), math.cos(2 * f1)],
        ]
    )
    torch.testing.assert_close(pe, expected)
    # D = 96 as the words use it: f_i = 10000^(−2i/96), interleaved
    pe96 = sinusoid_1d(5, 96)
    assert pe96.shape == (5, 96)
    assert pe96[3, 10] == pytest.approx(math.sin(3 * 10000 ** (-10 / 96)), abs=1e-6)
    assert pe96[3, 11] == pytest.approx(math.cos(3 * 10000 ** (-10 / 96)), abs=1e-6)


def test_sinusoid_2d_rows_first_then_columns() -> None:
    pe = sinusoid_2d(8, 8, 96)
    assert pe.shape == (8, 8, 96)
    row, col = 2, 5
    f = [10000 ** (-2 * i / 48) for i in range(24)]  # D′ = 2⌈96/4⌉ = 48
    assert pe[row, col, 0] == pytest.approx(math.sin(row), abs=1e-6)
    assert pe[row, col, 1] == pytest.approx(math.cos(row), abs=1e-6)
    assert pe[row, col, 6] == pytest.approx(math.sin(row * f[3]), abs=1e-6)
    assert pe[row, col, 47] == pytest.approx(math.cos(row * f[23]), abs=1e-6)
    assert pe[row, col, 48] == pytest.approx(math.sin(col), abs=1e-6)
    assert pe[row, col, 49] == pytest.approx(math.cos(col), abs=1e-6)
    assert pe[row, col, 95] == pytest.approx(math.cos(col * f[23]), abs=1e-6)
    # the row half does not depend on the column and vice versa
    torch.testing.assert_close(pe[row, 0, :48], pe[row, 7, :48])
    torch.testing.assert_close(pe[0, col, 48:], pe[7, col, 48:])


def test_transformer_cls_only_last_layer_equals_the_full_decoder() -> None:
    torch.manual_seed(0)
    model = TransformerPolicy()
    tokens, memory = torch.randn(3, 65, 96), torch.randn(3, 5, 96)
    full = model.decoder(tokens, memory)[:, -1]
    torch.testing.assert_close(model.decode_cls(tokens, memory), full, atol=1e-5, rtol=1e-5)
    with torch.inference_mode():  # eval mode takes torch's fused inference path
        model.eval()
        full = model.decoder(tokens, memory)[:, -1]
        torch.testing.assert_close(model.decode_cls(tokens, memory), full, atol=1e-5, rtol=1e-5)


def test_transformer_uses_the_positions() -> None:
    torch.manual_seed(0)
    model = TransformerPolicy()
    torch.testing.assert_close(model.word_positions, sinusoid_1d(5, 96))
    torch.testing.assert_close(model.cell_positions, sinusoid_2d(8, 8, 96).reshape(64, 96))


def test_bc_loss_is_valid_step_cross_entropy_minus_entropy_over_all() -> None:
    logits = torch.tensor([[2.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 0.0]])
    actions = torch.tensor([0, 2, -1])
    valid = torch.tensor([True, True, False])
    logp = torch.log_softmax(logits, -1)
    ce = -(logp[0, 0] + logp[1, 2]) / 2
    entropy = -(logp.exp() * logp).sum(-1).mean()
    loss, ce_out, ent_out = bc_loss(logits, actions, valid)
    torch.testing.assert_close(ce_out, ce)
    torch.testing.assert_close(ent_out, entropy)
    torch.testing.assert_close(loss, ce - 0.01 * entropy)
    assert entropy.item() > 0  # the padding row (uniform) counts in the entropy


def test_weighted_batch_norm_keeps_float32_statistics_under_autocast() -> None:
    torch.manual_seed(0)
    x = torch.randn(3, 4, 2, 2)
    counts = torch.tensor([1.0, 3.0, 2.0])
    a, b = WeightedBatchNorm2d(4), WeightedBatchNorm2d(4)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = a(x.bfloat16(), counts)
    ref = b(x.bfloat16().float(), counts)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, ref)
    torch.testing.assert_close(a.running_var, b.running_var)
