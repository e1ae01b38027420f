import math

import pytest
import torch
import torch.nn.functional as F

from aasp_sb.losses import (
    ContrastiveHead,
    layer_norm_targets,
    multi_positive_infonce,
    regression_loss,
)


def test_regression_identical_orthogonal_opposite():
    x = torch.randn(4, 6, 16)
    assert regression_loss(x, x.clone()).item() == pytest.approx(0.0, abs=1e-6)
    assert regression_loss(x, 2.5 * x).item() == pytest.approx(0.0, abs=1e-6)
    e = torch.eye(4)
    assert regression_loss(e[:2], e[2:]).item() == pytest.approx(2.0)
    assert regression_loss(x, -x).item() == pytest.approx(4.0, abs=1e-5)


def test_regression_is_mean_of_2_minus_2cos_and_weights():
    p, t = torch.randn(3, 5, 8), torch.randn(3, 5, 8)
    per = 2 - 2 * F.cosine_similarity(p, t, dim=-1)
    assert regression_loss(p, t).item() == pytest.approx(
        per.mean().item(), abs=1e-6
    )
    w = torch.zeros(3, 5)
    w[:, :2] = 1.0
    got = regression_loss(p, t, weights=w).item()
    assert got == pytest.approx(per[:, :2].mean().item(), abs=1e-6)
    # broadcastable weights
    got = regression_loss(p, t, weights=torch.tensor([1.0, 0.0, 0.0])[:, None])
    assert got.item() == pytest.approx(per[0].mean().item(), abs=1e-6)


def test_regression_shape_mismatch():
    with pytest.raises(ValueError):
        regression_loss(torch.randn(2, 3), torch.randn(3, 3))


def test_layer_norm_targets_top_k():
    layers = [torch.randn(2, 4, 8) * (i + 1) + i for i in range(5)]
    last = layer_norm_targets(layers)
    assert torch.allclose(last, F.layer_norm(layers[-1], (8,)))
    assert torch.allclose(last.mean(-1), torch.zeros(2, 4), atol=1e-5)
    top3 = layer_norm_targets(layers, top_k=3)
    ref = sum(F.layer_norm(x, (8,)) for x in layers[-3:]) / 3
    assert torch.allclose(top3, ref, atol=1e-6)
    assert torch.allclose(
        layer_norm_targets(torch.stack(layers), top_k=3), top3
    )
    assert torch.allclose(layer_norm_targets(layers[-1]), last)
    with pytest.raises(ValueError, match="top_k"):
        layer_norm_targets(layers, top_k=6)


def test_contrastive_head_unit_norm():
    head = ContrastiveHead(12, proj_dim=6, hidden_dim=20)
    z = head(torch.randn(3, 4, 12))
    assert z.shape == (3, 4, 6)
    assert torch.allclose(z.norm(dim=-1), torch.ones(3, 4), atol=1e-6)


def _reference_infonce(z, tau):
    B, M, _ = z.shape
    flat = z.reshape(B * M, -1).double()
    sim = flat @ flat.t() / tau
    total = 0.0
    for i in range(B * M):
        others = [j for j in range(B * M) if j != i]
        denom = torch.logsumexp(sim[i, others], 0)
        pos = [j for j in others if j // M == i // M]
        total += -sum(sim[i, j] - denom for j in pos) / len(pos)
    return total / (B * M)


def test_infonce_chance_when_all_identical():
    for B, M in [(1, 2), (3, 2), (4, 4)]:
        z = F.normalize(torch.ones(B, M, 8), dim=-1)
        loss = multi_positive_infonce(z, tau=0.2).item()
        assert loss == pytest.approx(math.log(B * M - 1), abs=1e-5)


def test_infonce_matches_reference():
    z = F.normalize(torch.randn(3, 4, 16), dim=-1)
    got = multi_positive_infonce(z, tau=0.3).item()
    assert got == pytest.approx(float(_reference_infonce(z, 0.3)), abs=1e-5)


def test_infonce_lower_when_views_agree_and_clips_differ():
    B, M = 4, 3
    chance = math.log(B * M - 1)
    agree = torch.eye(8)[:B, None, :].expand(B, M, 8)
    loss = multi_positive_infonce(agree, tau=0.2).item()
    assert loss < chance - 1.0
    # noisier agreement sits between perfect agreement and chance
    noisy = F.normalize(agree + 0.5 * torch.randn(B, M, 8), dim=-1)
    mid = multi_positive_infonce(noisy, tau=0.2).item()
    assert loss < mid


def test_infonce_gradients_finite_and_m_check():
    z = F.normalize(torch.randn(2, 3, 5), dim=-1).requires_grad_(True)
    multi_positive_infonce(z).backward()
    assert torch.isfinite(z.grad).all()
    with pytest.raises(ValueError, match="M=1"):
        multi_positive_infonce(torch.randn(4, 1, 5))
