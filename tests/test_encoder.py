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
    enc = tiny_encoder(False)
    a = torch.randn(1, 100, 80)
    b = torch.randn(1, 180, 80)
    batch = torch.cat([torch.nn.functional.pad(a, (0, 0, 0, 80)), b])
    with torch.no_grad():
        out = enc(batch, torch.tensor([100 / 180, 1.0]))
        alone = enc(a)
    assert out.mask.shape == (2, 5 * 12)
    assert out.mask[0].view(5, 12)[0].tolist() == [True] * 7 + [False] * 5
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
    enc = tiny_encoder(False)
    x = torch.randn(2, 64, 80)
    lengths = torch.tensor([0.5, 1.0])
    with torch.no_grad():
        out1 = enc(x, lengths)
        x2 = x.clone()
        x2[0, 32:] = 100.0
        out2 = enc(x2, lengths)
    keep = out1.mask[0]
    assert torch.allclose(out1.tokens[0][keep], out2.tokens[0][keep], atol=1e-5)


def test_config_errors():
    stem = make_stem(False, n_mels=80, patch_size=16, embed_dim=32)
    with pytest.raises(ValueError, match="embed_dim"):
        AudioViT(stem, embed_dim=64, depth=1, num_heads=4)
    with pytest.raises(ValueError, match="max_frames"):
        AudioViT(stem, embed_dim=32, depth=1, num_heads=4, max_frames=100)
    enc = AudioViT(stem, embed_dim=32, depth=1, num_heads=4, max_frames=64)
    with pytest.raises(ValueError, match="n_mels"):
        enc(torch.randn(1, 64, 40))
