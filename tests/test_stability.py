"""Tests for aasp_sb.evaluation.stability (aliasing-stability metric)."""

import math

import pytest
import torch

from aasp_sb.evaluation.stability import (
    measure_shift_stability,
    shift_cosine_similarity,
    shift_features,
    shift_waveform,
    stability_report,
)


def test_identical_embeddings_give_one():
    ref = torch.randn(10, 32)
    per_shift, overall = shift_cosine_similarity(ref, ref.expand(3, 10, 32))
    torch.testing.assert_close(per_shift, torch.ones(3, dtype=torch.float64))
    assert overall == pytest.approx(1.0)
    # A 2-D `shifted` is one shift; scaling does not change the cosine.
    per_shift, _ = shift_cosine_similarity(ref, 3.0 * ref)
    assert per_shift.shape == (1,) and per_shift.item() == pytest.approx(1.0)


def test_rotation_in_a_plane_gives_cos_theta():
    # Rotate each reference vector u by theta in the plane span(u, v), v a
    # unit-norm-matched vector orthogonal to u: cos(u, R u) = cos(theta).
    g = torch.Generator().manual_seed(0)
    n, d = 16, 24
    u = torch.randn(n, d, generator=g, dtype=torch.float64)
    w = torch.randn(n, d, generator=g, dtype=torch.float64)
    v = w - (w * u).sum(1, keepdim=True) / (u * u).sum(1, keepdim=True) * u
    v = v / v.norm(dim=1, keepdim=True) * u.norm(dim=1, keepdim=True)
    thetas = torch.tensor([0.0, 0.1, math.pi / 4, math.pi / 2, 2.0], dtype=torch.float64)
    shifted = torch.stack([math.cos(t) * u + math.sin(t) * v for t in thetas.tolist()])
    per_shift, overall = shift_cosine_similarity(u, shifted)
    torch.testing.assert_close(per_shift, thetas.cos(), atol=1e-12, rtol=0)
    assert overall == pytest.approx(thetas.cos().mean().item(), abs=1e-12)


def test_rotation_matrix_in_coordinate_plane():
    # Vectors living in the (x0, x1) plane rotated by a 2x2 rotation matrix.
    theta = 0.7
    rot = torch.tensor(
        [[math.cos(theta), -math.sin(theta)], [math.sin(theta), math.cos(theta)]],
        dtype=torch.float64,
    )
    ref = torch.zeros(8, 5, dtype=torch.float64)
    ref[:, :2] = torch.randn(8, 2, dtype=torch.float64)
    shifted = ref.clone()
    shifted[:, :2] = ref[:, :2] @ rot.T
    per_shift, _ = shift_cosine_similarity(ref, shifted)
    assert per_shift.item() == pytest.approx(math.cos(theta), abs=1e-12)


def test_cosine_shape_errors():
    with pytest.raises(ValueError):
        shift_cosine_similarity(torch.randn(4, 3), torch.randn(2, 5, 3))


@pytest.mark.parametrize("k", [1, 3, 7])
def test_shift_features_crop_and_roll(k):
    b, t, f = 2, 12, 4
    x = torch.randn(b, t, f)
    crop = shift_features(x, k)
    assert crop.shape == x.shape
    torch.testing.assert_close(crop[:, : t - k], x[:, k:])
    torch.testing.assert_close(crop[:, t - k :], x[:, -1:].expand(b, k, f))
    zero = shift_features(x, k, pad="zero")
    torch.testing.assert_close(zero[:, : t - k], x[:, k:])
    assert torch.all(zero[:, t - k :] == 0)
    roll = shift_features(x, k, mode="roll")
    torch.testing.assert_close(roll[:, : t - k], x[:, k:])
    torch.testing.assert_close(roll[:, t - k :], x[:, :k])
    # Negative shift delays; shifting back and forth restores the middle.
    back = shift_features(crop, -k)
    torch.testing.assert_close(back[:, k:], x[:, k:])
    torch.testing.assert_close(back[:, :k], crop[:, :1].expand(b, k, f))
    torch.testing.assert_close(shift_features(roll, -k, mode="roll"), x)
    # 2-D input [T, F] works the same way.
    torch.testing.assert_close(shift_features(x[0], k), crop[0])


def test_shift_features_zero_and_errors():
    x = torch.randn(1, 6, 2)
    out = shift_features(x, 0)
    torch.testing.assert_close(out, x)
    assert out.data_ptr() != x.data_ptr()
    for bad in (
        dict(shift_frames=6),
        dict(shift_frames=1.5),
        dict(shift_frames=1, mode="wrap"),
        dict(shift_frames=1, pad="reflect"),
    ):
        with pytest.raises(ValueError):
            shift_features(x, **bad)


def test_shift_waveform_delays_by_k_hops():
    hop, k = 160, 3
    wav = torch.randn(2, 16000)
    out = shift_waveform(wav, k, hop_length=hop)
    assert out.shape == wav.shape
    assert torch.all(out[:, : k * hop] == 0)
    torch.testing.assert_close(out[:, k * hop :], wav[:, : -k * hop])
    long = shift_waveform(wav, k, hop_length=hop, keep_length=False)
    assert long.shape[-1] == 16000 + k * hop
    torch.testing.assert_close(long[:, k * hop :], wav)
    # Sub-frame shift: round(0.25 * 160) = 40 samples.
    sub = shift_waveform(wav[0], 0.25, hop_length=hop)
    torch.testing.assert_close(sub[40:], wav[0, :-40])
    # Negative: advance.
    adv = shift_waveform(wav, -1, hop_length=hop)
    torch.testing.assert_close(adv[:, : -hop], wav[:, hop:])
    assert torch.all(adv[:, -hop:] == 0)


def test_waveform_delay_moves_frames_by_k():
    # Frame t of the delayed signal is frame t - k of the original (framing
    # without centre padding), i.e. shift_waveform(+k) ~ shift_features(-k).
    hop, win, k = 160, 400, 4
    wav = torch.randn(8000)
    frames = wav.unfold(0, win, hop)  # [T, win]
    frames_delayed = shift_waveform(wav, k, hop_length=hop).unfold(0, win, hop)
    torch.testing.assert_close(frames_delayed[k:], frames[:-k])
    torch.testing.assert_close(shift_features(frames_delayed, k)[:-k], frames[:-k])


def test_measure_shift_stability():
    feats = torch.randn(4, 20, 6)
    # Time-averaged embedding is invariant to a circular shift.
    per_shift, overall = measure_shift_stability(
        lambda x: x.mean(dim=1), feats, [1, 2, 5], mode="roll"
    )
    torch.testing.assert_close(per_shift, torch.ones(3, dtype=torch.float64))
    # A position-sensitive embedding (flattened frames) is not.
    per_shift, overall = measure_shift_stability(
        lambda x: x.flatten(1), feats, [1, 2]
    )
    assert per_shift.shape == (2,) and overall < 0.5


def test_stability_report():
    table = stability_report(
        {"plain": torch.tensor([0.9, 0.8, 0.7]), "aape": [0.99, 0.98, 0.97]},
        shifts=[1, 2, 4],
        digits=3,
    )
    lines = table.splitlines()
    assert lines[0] == "| shift | plain | aape |"
    assert lines[1] == "|---|---|---|"
    assert lines[2] == "| 1 | 0.900 | 0.990 |"
    assert lines[4] == "| 4 | 0.700 | 0.970 |"
    assert lines[5] == "| mean | 0.800 | 0.980 |"
    with pytest.raises(ValueError):
        stability_report({"plain": [0.9]}, shifts=[1, 2])
