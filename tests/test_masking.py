import pytest
import torch

from aasp_sb.masking import gather_tokens, multi_mask, num_visible


def test_shapes_partition_and_sorted():
    vis, msk = multi_mask(3, 190, 4, 0.7)
    assert vis.shape == (3, 4, 57) and msk.shape == (3, 4, 133)
    assert vis.dtype == torch.long and msk.dtype == torch.long
    both = torch.cat([vis, msk], dim=-1).sort(dim=-1).values
    assert torch.equal(both, torch.arange(190).expand(3, 4, 190))
    assert (vis.diff(dim=-1) > 0).all() and (msk.diff(dim=-1) > 0).all()


@pytest.mark.parametrize(
    "n, ratio, nv",
    [(190, 0.7, 57), (10, 0.75, 2), (10, 0.99, 1), (10, 0.01, 9), (2, 0.5, 1)],
)
def test_m2d_rounding_with_at_least_one_each(n, ratio, nv):
    assert num_visible(n, ratio) == nv
    vis, msk = multi_mask(2, n, 3, ratio)
    assert vis.shape[-1] == nv and msk.shape[-1] == n - nv


def test_deterministic_under_generator_and_views_differ():
    a = multi_mask(2, 50, 4, 0.7, generator=torch.Generator().manual_seed(1))
    b = multi_mask(2, 50, 4, 0.7, generator=torch.Generator().manual_seed(1))
    c = multi_mask(2, 50, 4, 0.7, generator=torch.Generator().manual_seed(2))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert not torch.equal(a[0], c[0])
    # the views of one clip are independent draws
    assert not torch.equal(a[0][0, 0], a[0][0, 1])


def test_masking_frequency_is_uniform():
    _, msk = multi_mask(
        400, 20, 1, 0.7, generator=torch.Generator().manual_seed(0)
    )
    freq = torch.zeros(20).index_add_(0, msk.flatten(), torch.ones(msk.numel()))
    freq = freq / 400
    assert torch.allclose(freq, torch.full((20,), 0.7), atol=0.1)


@pytest.mark.parametrize("ratio", [0.0, 1.0, -0.1, 1.5])
def test_bad_mask_ratio(ratio):
    with pytest.raises(ValueError, match="mask_ratio"):
        multi_mask(2, 10, 2, ratio)


def test_bad_num_masks_and_tokens():
    with pytest.raises(ValueError, match="num_masks"):
        multi_mask(2, 10, 0, 0.5)
    with pytest.raises(ValueError, match="num_tokens"):
        multi_mask(2, 1, 1, 0.5)


def test_gather_tokens_matches_reference_and_backprops():
    B, N, D, M, K = 3, 7, 5, 2, 4
    x = torch.randn(B, N, D, requires_grad=True)
    vis, _ = multi_mask(B, N, M, 1 - K / N - 1e-6)
    assert vis.shape == (B, M, K)
    out = gather_tokens(x, vis)
    assert out.shape == (B * M, K, D)
    for b in range(B):
        for m in range(M):
            assert torch.equal(out[b * M + m], x[b, vis[b, m]])
    out.sum().backward()
    counts = torch.zeros(B, N).scatter_add_(
        1, vis.flatten(1), torch.ones(B, M * K)
    )
    assert torch.equal(x.grad, counts[..., None].expand(B, N, D))


def test_gather_tokens_batch_mismatch():
    with pytest.raises(ValueError, match="clips"):
        gather_tokens(
            torch.randn(2, 5, 3), torch.zeros(3, 1, 2, dtype=torch.long)
        )
