import pytest
import torch

from aasp_sb.lobes.predictor import CrossAttentionPredictor
from aasp_sb.masking import gather_tokens, multi_mask


def _setup(B=2, grid=(3, 4), ratio=0.5, enc=24):
    vis, msk = multi_mask(B, grid[0] * grid[1], 1, ratio)
    vis, msk = vis[:, 0], msk[:, 0]
    ctx = torch.randn(B, vis.shape[1], enc)
    return ctx, vis, msk


def _small(**kw):
    kw = {"predictor_dim": 16, "depth": 2, "num_heads": 4, **kw}
    pred = CrossAttentionPredictor(24, **kw).eval()
    # larger random weights than the init, so that position effects are large
    with torch.no_grad():
        for p in pred.parameters():
            p.normal_(0.0, 0.5)
    return pred


def test_shapes_and_output_dim():
    ctx, vis, msk = _setup()
    assert _small()(ctx, vis, msk, (3, 4)).shape == (2, 6, 24)
    assert _small(output_dim=10)(ctx, vis, msk, (3, 4)).shape == (2, 6, 10)
    out = _small(self_attention=True)(ctx, vis, msk, (3, 4))
    assert out.shape == (2, 6, 24)


def test_context_is_a_set_of_positioned_tokens():
    pred = _small()
    ctx, vis, msk = _setup()
    perm = torch.randperm(vis.shape[1])
    a = pred(ctx, vis, msk, (3, 4))
    b = pred(ctx[:, perm], vis[:, perm], msk, (3, 4))
    assert torch.allclose(a, b, atol=1e-5)
    # moving the same tokens to other positions changes the prediction
    c = pred(ctx, vis.flip(-1), msk, (3, 4))
    assert not torch.allclose(a, c, atol=1e-4)


def test_queries_independent_without_self_attention():
    pred = _small()
    ctx, vis, msk = _setup()
    full = pred(ctx, vis, msk, (3, 4))
    one = pred(ctx, vis, msk[:, :1], (3, 4))
    assert torch.allclose(full[:, :1], one, atol=1e-5)
    # different masked positions get different predictions
    assert not torch.allclose(full[:, 0], full[:, 1], atol=1e-4)
    sa = _small(self_attention=True)
    full = sa(ctx, vis, msk, (3, 4))
    one = sa(ctx, vis, msk[:, :1], (3, 4))
    assert not torch.allclose(full[:, :1], one, atol=1e-5)


def test_padded_context_is_ignored():
    pred = _small()
    ctx, vis, msk = _setup()
    ref = pred(ctx, vis, msk, (3, 4))
    junk = torch.randn(2, 2, 24) * 100
    ctx2 = torch.cat([ctx, junk], 1)
    vis2 = torch.cat([vis, msk[:, :2]], 1)
    mask = torch.ones(2, ctx2.shape[1], dtype=torch.bool)
    mask[:, -2:] = False
    out = pred(ctx2, vis2, msk, (3, 4), key_padding_mask=mask)
    assert torch.allclose(ref, out, atol=1e-5)


def test_pos_cache_and_state_dict():
    pred = _small()
    t1 = pred.pos_table((3, 4), torch.device("cpu"))
    assert t1 is pred.pos_table((3, 4), torch.device("cpu"))
    assert t1.shape == (12, 16)
    assert pred.pos_table((2, 4), torch.device("cpu")).shape == (8, 16)
    assert not any("pos" in k for k in pred.state_dict())


def test_gradients_and_multi_view_batching():
    pred = CrossAttentionPredictor(24, predictor_dim=16, depth=1, num_heads=2)
    B, M, grid = 2, 3, (2, 5)
    x = torch.randn(B, 10, 24, requires_grad=True)
    vis, msk = multi_mask(B, 10, M, 0.6)
    ctx = gather_tokens(x, vis)
    out = pred(ctx, vis.flatten(0, 1), msk.flatten(0, 1), grid)
    assert out.shape == (B * M, 6, 24)
    out.square().mean().backward()
    assert pred.mask_token.grad.abs().sum() > 0
    assert pred.context_proj.weight.grad.abs().sum() > 0
    assert x.grad.abs().sum() > 0
    assert pred.mask_token.detach().abs().sum() > 0  # not left at zero


def test_bad_arguments():
    with pytest.raises(ValueError, match="predictor_dim"):
        CrossAttentionPredictor(24, predictor_dim=18, num_heads=2)
    pred = _small()
    ctx, vis, msk = _setup()
    with pytest.raises(ValueError, match="disagree"):
        pred(ctx[:, :-1], vis, msk, (3, 4))


@pytest.mark.parametrize(
    "name, width, depth, self_attention",
    [("aasp_tiny", 128, 2, False), ("aasp_cpu", 192, 4, True), ("aasp_base", None, None, False)],
)
def test_yaml_predictor_keys_reach_the_module(name, width, depth, self_attention):
    """``predictor_self_attention`` (and width / depth) in the shipped YAMLs build that predictor."""
    import pathlib

    from hyperpyyaml import load_hyperpyyaml

    path = pathlib.Path(__file__).resolve().parents[1] / "hparams" / f"{name}.yaml"
    with open(path, encoding="utf-8") as f:
        hp = load_hyperpyyaml(f, {"data_folder": "unused", "embed_dim": 32, "num_heads": 2,
                                  "depth": 1})
    pred = hp["predictor"]
    assert hp["predictor_self_attention"] is self_attention
    assert all(blk.self_attention is self_attention for blk in pred.blocks)
    assert all(hasattr(blk, "self_attn") == self_attention for blk in pred.blocks)
    if width is not None:
        assert pred.predictor_dim == width and len(pred.blocks) == depth
    with open(path, encoding="utf-8") as f:
        flipped = load_hyperpyyaml(f, {"data_folder": "unused", "embed_dim": 32, "num_heads": 2,
                                       "depth": 1, "predictor_self_attention": not self_attention})
    assert all(blk.self_attention is not self_attention for blk in flipped["predictor"].blocks)
