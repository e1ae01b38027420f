"""AaPE and the encoder are usable from any SpeechBrain recipe's YAML."""

import torch
from hyperpyyaml import load_hyperpyyaml

YAML = """
n_mels: 80
embed_dim: 32
compute_features: !new:aasp_sb.features.Features
stem: !new:aasp_sb.lobes.aape.AaPE
    n_mels: !ref <n_mels>
    patch_size: 16
    embed_dim: !ref <embed_dim>
    num_modes: 4
encoder: !new:aasp_sb.lobes.encoder.AudioViT
    stem: !ref <stem>
    embed_dim: !ref <embed_dim>
    depth: 2
    num_heads: 4
    max_frames: 96
plain_stem: !apply:aasp_sb.lobes.aape.make_stem
    use_aape: False
    n_mels: !ref <n_mels>
    embed_dim: !ref <embed_dim>
"""


def test_yaml_builds_and_runs_aape_encoder():
    hp = load_hyperpyyaml(YAML)
    wav = torch.randn(2, 16000)
    feats = hp["compute_features"](wav)
    out = hp["encoder"](feats, torch.tensor([1.0, 0.7]))
    assert out.tokens.shape == (2, 5 * 7, 32)
    assert hp["encoder"].clip_embedding(out).shape == (2, 32)
    assert hp["plain_stem"](feats).shape == (2, 35, 32)
