import pytest
import torch

from aasp_sb.lobes.aape import make_stem
from aasp_sb.lobes.encoder import AudioViT


def tiny_encoder(use_aape=True, max_frames=64, depth=2):
    stem = make_stem(use_aape, n_mels=80, patch_size=16, embed_dim=32, num_modes=4)
    enc = AudioViT(stem, embed_dim=32, depth=depth, num_heads=4, max_frames=max_frames)
    return enc.eval()


@pytest.mark.parametrize("use_aape", [True, False])
def test_chunked_encoding_matches_separate_passes(use_aape):
    enc = tiny_encoder(use_aape)
    if use_aape:
        torch.nn.init.constant_(enc.stem.gate, 0.3)
    x = torch.randn(1, 128, 80)
    with torch.no_grad():
        whole = enc(x)  # 2 chunks of 64
        parts = [enc(x[:, :64]), enc(x[:, 64:])]
    assert whole.grid == (5, 8)
    tok = whole.tokens.view(1, 5, 8, 32)
    assert torch.allclose(tok[:, :, :4], parts[0].tokens.view(1, 5, 4, 32), atol=1e-5)
    assert torch.allclose(tok[:, :, 4:], parts[1].tokens.view(1, 5, 4, 32), atol=1e-5)


def test_chunked_with_lengths_masks_padding_and_is_batch_independent():
    """A clip chunked inside a longer, padded batch gives its own tokens.

    The clip (100 frames) is chunked as 64 + 36 frames. Encoded alone, its
    second piece has 3 token columns and no padding; in the batch that chunk
    has a 4th, padded column (and a third chunk is all padding), and the
    padded frames hold huge values. Without the stem zeroing the padding or
    without key-padding masks in attention, the clip's tokens would change.
    """
    enc = tiny_encoder(False)
    a = torch.randn(1, 100, 80)
    b = torch.randn(1, 180, 80)
    junk = 1e3 * torch.randn(1, 80, 80)
    batch = torch.cat([torch.cat([a, junk], dim=1), b])
    with torch.no_grad():
        out = enc(batch, torch.tensor([100 / 180, 1.0]))
        head, tail = enc(a[:, :64]), enc(a[:, 64:])
        alone = enc(a)
    assert out.mask.shape == (2, 5 * 12)
    assert out.mask[0].view(5, 12)[0].tolist() == [True] * 7 + [False] * 5
    assert tail.mask is None and tail.grid == (5, 3)  # 36 frames: no padded column
    tok = out.tokens[0].view(5, 12, 32)
    assert torch.allclose(tok[:, :4], head.tokens[0].view(5, 4, 32), atol=1e-5)
    assert torch.allclose(tok[:, 4:7], tail.tokens[0].view(5, 3, 32), atol=1e-5)
    e_batch = enc.clip_embedding(out)[0]
    e_alone = enc.clip_embedding(alone)[0]
    assert torch.allclose(e_batch, e_alone, atol=1e-5)


def test_layers_frames_and_clip_outputs():
    enc = tiny_encoder(True, depth=3)
    with torch.no_grad():
        out = enc(torch.randn(2, 64, 80), return_layers=True)
    assert len(out.layers) == 3
    frames = enc.frame_features(out)
    assert frames.shape == (2, 4, 5 * 32)
    # (f t) d -> t (f d): frame t holds the 5 row tokens of column t
    assert torch.equal(frames[0, 1, 32:64], out.tokens[0, 1 * 4 + 1])
    assert enc.clip_embedding(out).shape == (2, 32)


def test_padding_mask_excludes_padded_keys_from_attention():
    """Padded keys never reach real tokens: neither their content nor their number."""
    enc = tiny_encoder(False)
    x = torch.randn(2, 64, 80)
    lengths = torch.tensor([0.5, 1.0])
    with torch.no_grad():
        tokens, mask, _ = enc.embed(x, lengths)
        ref, _ = enc.encode(tokens, mask)
        # arbitrary, huge padded tokens (what a stem that did not zero them would give)
        noisy = tokens.clone()
        noisy[~mask] = 1e3 * torch.randn(int((~mask).sum()), 32)
        got, _ = enc.encode(noisy, mask)
        # end to end: huge values in the padded frames, and more padded columns
        x2 = x.clone()
        x2[0, 32:] = 1e3 * torch.randn(32, 80)
        out2 = enc(x2, lengths)
        short = enc(x[:1, :32])  # the same clip alone: no padded column at all
    keep = mask[0]
    assert int(keep.sum()) == 5 * 2 and short.mask is None
    assert torch.allclose(got[0][keep], ref[0][keep], atol=1e-5)
    assert torch.allclose(got[1], ref[1], atol=1e-5)
    assert torch.allclose(out2.tokens[0][keep], ref[0][keep], atol=1e-5)
    real = ref[0].view(5, 4, 32)[:, :2]
    assert torch.allclose(real, short.tokens[0].view(5, 2, 32), atol=1e-5)


def test_config_errors():
    stem = make_stem(False, n_mels=80, patch_size=16, embed_dim=32)
    with pytest.raises(ValueError, match="embed_dim"):
        AudioViT(stem, embed_dim=64, depth=1, num_heads=4)
    with pytest.raises(ValueError, match="max_frames"):
        AudioViT(stem, embed_dim=32, depth=1, num_heads=4, max_frames=100)
    enc = AudioViT(stem, embed_dim=32, depth=1, num_heads=4, max_frames=64)
    with pytest.raises(ValueError, match="n_mels"):
        enc(torch.randn(1, 64, 40))
