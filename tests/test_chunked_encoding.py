"""Long inputs: the shorter last chunk is encoded at its own length, outputs unchanged.

The reference below is the previous implementation (every chunk padded to
``max_frames`` frames, the padding masked in attention); the new path must
give the same tokens, masks and per-layer outputs on clips of several lengths,
in batches of mixed lengths, for the plain stem and AaPE.
"""

import pytest
import torch
from torch import nn

from aasp_sb.features import frame_lengths
from aasp_sb.lobes.aape import make_stem
from aasp_sb.lobes.encoder import AudioViT
from aasp_sb.lobes.patch import token_mask

MAX = 96  # frames per chunk (6 patch columns)


def padded_chunks_reference(enc, x, lengths, return_layers=False):
    """The previous ``_forward_chunked``: all chunks padded to ``max_frames``."""
    B, T, F = x.shape
    chunk = enc.max_frames
    C = -(-T // chunk)
    valid = frame_lengths(lengths, T)
    if valid is None:
        valid = torch.full((B,), T, dtype=torch.long)
    x = nn.functional.pad(x, (0, 0, 0, C * chunk - T))
    xc = x.view(B, C, chunk, F).reshape(B * C, chunk, F)
    starts = torch.arange(C) * chunk
    chunk_valid = (valid[:, None] - starts[None, :]).clamp(0, chunk)
    chunk_lens = chunk_valid.clamp_min(1).reshape(-1).float() / chunk
    tokens, mask, grid = enc.embed(xc, chunk_lens)
    tokens, layers = enc.encode(tokens, mask, return_layers)
    Fp, Tpc = grid
    Tp = -(-T // enc.patch_size[1])

    def merge(t):
        t = t.view(B, C, Fp, Tpc, t.shape[-1]).transpose(1, 2)
        return t.reshape(B, Fp, C * Tpc, -1)[:, :, :Tp].reshape(B, Fp * Tp, -1)

    mask = token_mask(valid, (Fp, Tp), enc.patch_size[1]) if lengths is not None else None
    return merge(tokens), mask, [merge(t) for t in layers] if return_layers else None


def build(use_aape):
    torch.manual_seed(0)
    stem = make_stem(use_aape, n_mels=80, patch_size=16, embed_dim=32, num_modes=4)
    return AudioViT(stem, 32, depth=2, num_heads=4, max_frames=MAX).eval()


@pytest.mark.parametrize("use_aape", [False, True], ids=["plain", "aape"])
@pytest.mark.parametrize(
    "num_frames,rel_lengths",
    [
        (163, None),  # 10 s at 608 frames scaled down: one full chunk + a short one
        (250, None),  # two full chunks + a 58-frame chunk (not a patch multiple)
        (192, None),  # exactly two chunks
        (250, [1.0, 0.5, 0.2]),  # mixed lengths: masked, some chunks all padding
    ],
)
def test_short_last_chunk_equals_padded_chunks(use_aape, num_frames, rel_lengths):
    enc = build(use_aape)
    B = 3 if rel_lengths else 2
    x = torch.randn(B, num_frames, 80)
    lengths = None if rel_lengths is None else torch.tensor(rel_lengths)
    if lengths is not None:  # the padding holds content that must not matter
        valid = frame_lengths(lengths, num_frames)
        for b in range(B):
            x[b, valid[b] :] = 1e3
    with torch.no_grad():
        out = enc(x, lengths, return_layers=True)
        ref_tokens, ref_mask, ref_layers = padded_chunks_reference(enc, x, lengths, True)
    assert out.tokens.shape == ref_tokens.shape
    keep = torch.ones(ref_tokens.shape[:2], dtype=torch.bool) if ref_mask is None else ref_mask
    assert (ref_mask is None) == (out.mask is None)
    if ref_mask is not None:
        assert torch.equal(out.mask, ref_mask)
    err = (out.tokens - ref_tokens)[keep].abs().max().item()
    assert err < 1e-5, err
    for a, b in zip(out.layers, ref_layers):
        assert (a - b)[keep].abs().max().item() < 1e-4


def test_short_chunk_costs_fewer_tokens():
    """What the change buys: 163 frames encode 6 + 5 columns, not 6 + 6."""
    enc = build(False)
    seen = []
    handle = enc.blocks[0].register_forward_hook(lambda m, i, o: seen.append(o.shape[0] * o.shape[1]))
    with torch.no_grad():
        enc(torch.randn(1, 163, 80))
    handle.remove()
    assert sum(seen) == 5 * (6 + 5), seen
