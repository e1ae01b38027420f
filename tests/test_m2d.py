"""M2D checkpoints: strict conversion, refusals by name, and M2D's math reproduced.

The reference below computes M2D's encoder from the raw tensors of an M2D
state dict in plain torch, following nttcslab/m2d (``m2d/models_mae.py`` as
produced by ``patch_m2d.diff``, and ``examples/portable_m2d.py``'s
``encode_lms``): input ``[B, 1, F, T]``, 608-frame chunks with a shorter last
chunk (its position table trimmed), a CLS token (``cls_token + pos_embed[:, :1]``)
prepended to every chunk, timm pre-LN blocks with a fused ``qkv`` (bias) and
LayerNorm eps 1e-6, the final norm, the CLS token dropped, and
``b (f t) d -> b t (f d)``.
"""

import argparse
import math

import pytest
import torch
import torch.nn.functional as F

from aasp_sb.m2d import (
    M2DError,
    convert_m2d_state,
    describe,
    fake_m2d_state,
    m2d_encoder,
    read_m2d_checkpoint,
)

BASE = dict(embed_dim=768, depth=12, grid=(5, 38), patch=(16, 16))  # 80x608 p16x16
SMALL = dict(embed_dim=64, depth=2, grid=(5, 26), patch=(16, 8), hidden=96)  # 80x208 p16x8


def m2d_reference(state, lms, unit_frames, patch, num_heads):
    """M2D's encode_lms on raw tensors: [B, F, T] log-mel -> [B, T', Fp*D]."""
    x = lms.transpose(1, 2).unsqueeze(1)  # [B, 1, F, T]
    pf, pt = patch
    x = F.pad(x, (0, (-x.shape[-1]) % pt))
    D = state["norm.weight"].shape[0]
    Fp = x.shape[2] // pf
    depth = 1 + max(int(k.split(".")[1]) for k in state if k.startswith("blocks."))
    out = []
    for i in range(math.ceil(x.shape[-1] / unit_frames)):
        c = x[..., i * unit_frames : (i + 1) * unit_frames]
        t = F.conv2d(c, state["patch_embed.proj.weight"], state["patch_embed.proj.bias"], stride=patch)
        t = t.flatten(2).transpose(1, 2)  # b (f t) d
        pos = state["pos_embed"][:, 1:, :]
        Tc = t.shape[1] // Fp
        pos = pos.reshape(1, Fp, -1, D)[:, :, :Tc, :].reshape(1, Fp * Tc, D)
        t = t + pos
        cls = (state["cls_token"] + state["pos_embed"][:, :1, :]).expand(t.shape[0], -1, -1)
        t = torch.cat([cls, t], dim=1)
        for b in range(depth):
            p = f"blocks.{b}."
            h = F.layer_norm(t, (D,), state[p + "norm1.weight"], state[p + "norm1.bias"], 1e-6)
            B, N, _ = h.shape
            qkv = (h @ state[p + "attn.qkv.weight"].T + state[p + "attn.qkv.bias"])
            q, k, v = qkv.reshape(B, N, 3, num_heads, D // num_heads).permute(2, 0, 3, 1, 4)
            a = ((q @ k.transpose(-2, -1)) * (D // num_heads) ** -0.5).softmax(-1) @ v
            a = a.transpose(1, 2).reshape(B, N, D)
            t = t + a @ state[p + "attn.proj.weight"].T + state[p + "attn.proj.bias"]
            h = F.layer_norm(t, (D,), state[p + "norm2.weight"], state[p + "norm2.bias"], 1e-6)
            h = F.gelu(h @ state[p + "mlp.fc1.weight"].T + state[p + "mlp.fc1.bias"])
            t = t + h @ state[p + "mlp.fc2.weight"].T + state[p + "mlp.fc2.bias"]
        t = F.layer_norm(t, (D,), state["norm.weight"], state["norm.bias"], 1e-6)[:, 1:]
        B = t.shape[0]
        out.append(t.reshape(B, Fp, Tc, D).permute(0, 2, 1, 3).reshape(B, Tc, Fp * D))
    return torch.cat(out, dim=1)


def save_like_m2d(tmp_path, state, folder="m2d_vit_base-80x608p16x16-240101"):
    path = tmp_path / folder / "checkpoint-300.pth"
    path.parent.mkdir(parents=True)
    torch.save({"model": state, "optimizer": {}, "epoch": 300,
                "args": argparse.Namespace(model="m2d_vit_base", mask_ratio=0.7)}, path)
    return path


@pytest.mark.parametrize("size", [BASE, SMALL], ids=["base-80x608p16", "small-80x208p16x8"])
def test_conversion_is_strict_and_complete(size):
    state = fake_m2d_state(**size)
    info = describe(state)
    enc, teacher = convert_m2d_state(state, info)
    assert info.input_size == (80, size["grid"][1] * size["patch"][1])
    assert info.depth == size["depth"] and info.embed_dim == size["embed_dim"]
    # every encoder tensor of M2D lands somewhere: count the numbers
    def numel(prefixes):
        return sum(v.numel() for k, v in state.items() if k.startswith(prefixes))
    online = numel(("patch_embed.", "cls_token", "blocks.", "norm."))
    assert sum(v.numel() for v in enc.values()) == online
    assert teacher is not None and sum(v.numel() for v in teacher.values()) == online - numel(
        ("blocks.", "norm.")) + numel(("target_blocks.", "target_norm."))


def test_base_forward_equals_m2d_math_on_a_10s_input(tmp_path):
    """10 s = 1001 frames: a 608-frame chunk and a 393-frame one (25 columns, last partial)."""
    torch.manual_seed(0)
    state = fake_m2d_state(**BASE, seed=1)
    path = save_like_m2d(tmp_path, state)
    enc, info = m2d_encoder(path)
    assert info.input_size == (80, 608) and info.norm_stats == (-7.1, 4.2)
    lms = torch.randn(2, 1001, 80)
    with torch.no_grad():
        ours = enc.frame_features(enc(lms))
        ref = m2d_reference(state, lms, 608, (16, 16), num_heads=12)
    assert ours.shape == ref.shape == (2, 63, 5 * 768)
    err = (ours - ref).abs().max().item()
    assert err < 1e-5, err


def test_other_size_and_target_encoder_equal_m2d_math():
    state = fake_m2d_state(**SMALL, seed=2)
    lms = torch.randn(2, 500, 80)  # two full 208-frame chunks and an 84-frame one
    enc, _ = m2d_encoder(state, num_heads=4)
    tgt, _ = m2d_encoder(state, num_heads=4, which="target")
    target_view = {k.replace("target_", ""): v for k, v in state.items() if k.startswith("target_")}
    target_state = {**state, **target_view}
    with torch.no_grad():
        a = (enc.frame_features(enc(lms)) - m2d_reference(state, lms, 208, (16, 8), 4))
        b = (tgt.frame_features(tgt(lms)) - m2d_reference(target_state, lms, 208, (16, 8), 4))
    assert a.abs().max().item() < 1e-5 and b.abs().max().item() < 1e-5


def test_the_cls_token_and_position_layout_matter():
    """The reference can tell: without M2D's CLS token or with our position layout it differs."""
    state = fake_m2d_state(**SMALL, seed=3)
    enc, _ = m2d_encoder(state, num_heads=4)
    lms = torch.randn(1, 208, 80)
    with torch.no_grad():
        ref = m2d_reference(state, lms, 208, (16, 8), 4)
        cls = enc.cls_token
        enc.cls_token = None
        no_cls = enc.frame_features(enc(lms))
        enc.cls_token = cls
        enc.pos_embed.copy_(enc.pos_embed.roll(32, -1))  # frequency half first
        swapped = enc.frame_features(enc(lms))
    assert (no_cls - ref).abs().max().item() > 1e-2
    assert (swapped - ref).abs().max().item() > 1e-2


@pytest.mark.parametrize(
    "edit,match",
    [
        (lambda s: s.pop("blocks.1.attn.qkv.bias"), r"`blocks\.1\.attn\.qkv\.bias`"),
        (lambda s: s.__setitem__("blocks.0.mlp.fc2.weight", torch.zeros(3, 3)),
         r"`blocks\.0\.mlp\.fc2\.weight` has shape \(3, 3\)"),
        (lambda s: s.__setitem__("head.weight", torch.zeros(2)), r"fit nothing.*`head\.weight`"),
        (lambda s: s.pop("target_norm.bias"), r"`target_norm\.bias`"),
        (lambda s: s["pos_embed"].add_(0.5), "not M2D's fixed sin-cos"),
        (lambda s: s.pop("cls_token"), "`cls_token`"),
    ],
    ids=["missing", "shape", "unknown", "missing-target", "pos_embed", "cls"],
)
def test_misfit_keys_are_refused_by_name(edit, match):
    state = fake_m2d_state(**SMALL)
    edit(state)
    with pytest.raises(M2DError, match=match):
        m2d_encoder(state, num_heads=4)


def test_checkpoint_file_reads_safely_with_its_namespace_and_norm_stats(tmp_path):
    state = fake_m2d_state(**SMALL)
    state["norm_stats"] = torch.tensor([-8.0, 4.5])
    path = save_like_m2d(tmp_path, state, folder="m2d_vit_base-80x208p16x8-x")
    sd, stats = read_m2d_checkpoint(path)
    assert "blocks.0.attn.qkv.weight" in sd
    _, info = m2d_encoder(path, num_heads=4)
    assert info.norm_stats == (-8.0, 4.5) and info.input_size == (80, 208)


def test_a_pickle_that_runs_code_is_refused(tmp_path):
    path = tmp_path / "m2d_vit_base-80x208p16x8-x" / "checkpoint-1.pth"
    path.parent.mkdir()
    torch.save({"model": fake_m2d_state(**SMALL), "hook": print}, path)
    with pytest.raises(M2DError, match="cannot read"):
        read_m2d_checkpoint(path)


def test_missing_file_is_named(tmp_path):
    with pytest.raises(M2DError, match="does not exist"):
        m2d_encoder(tmp_path / "nope.pth")


def test_aasp_encoder_from_m2d_embeds_with_m2d_front_end_and_stats(tmp_path):
    from aasp_sb.features import LogMel
    from aasp_sb.inference import AaSPEncoder, load_encoder

    state = fake_m2d_state(**SMALL, seed=4)
    state["norm_stats"] = torch.tensor([-8.0, 4.5])
    path = save_like_m2d(tmp_path, state, folder="m2d_vit_base-80x208p16x8-x")
    model = load_encoder(checkpoint=str(path), device="cpu")  # the HEAR / CLI entry point
    assert isinstance(model, AaSPEncoder)
    wav = torch.randn(1, 16000 * 3)
    lms = (LogMel()(wav) - (-8.0)) / 4.5
    enc, _ = m2d_encoder(path, num_heads=SMALL["embed_dim"] // 64 or 1)
    with torch.no_grad():
        frames = model.encode_batch(wav)
        ref = m2d_reference(state, lms, 208, (16, 8), num_heads=1)
    assert frames.shape == ref.shape
    assert (frames - ref).abs().max().item() < 1e-4
    target = load_encoder(checkpoint=str(path), which="teacher", device="cpu")
    assert not torch.allclose(target.encode_batch(wav), frames)


def test_continued_pretraining_starts_from_m2d_and_trains(tmp_path):
    import pathlib

    from hyperpyyaml import load_hyperpyyaml
    from speechbrain.dataio.batch import PaddedBatch

    from aasp_sb.brains.pretrain import AaSPBrain
    from aasp_sb.m2d import apply_init_from

    state = fake_m2d_state(embed_dim=32, depth=2, grid=(5, 4), hidden=128, seed=5)
    path = save_like_m2d(tmp_path, state, folder="m2d_vit_base-80x64p16x16-x")
    yaml = pathlib.Path(__file__).parents[1] / "hparams" / "aasp_tiny.yaml"
    hp = load_hyperpyyaml(yaml.read_text(), {
        "data_folder": str(tmp_path), "output_folder": str(tmp_path / "run"),
        "embed_dim": 32, "depth": 2, "num_heads": 2, "crop_frames": 64, "aape_modes": 4,
        "predictor_dim": 32, "predictor_depth": 1, "predictor_heads": 2,
        "number_of_epochs": 1, "cls_token": True, "pos_layout": "time_freq",
        "init_from": str(path)})
    enc = hp["encoder"]
    alias_before = {k: v.clone() for k, v in enc.stem.state_dict().items() if not k.startswith("proj.")}
    info = apply_init_from(hp)
    assert info.input_size == (80, 64)
    converted, target = convert_m2d_state(state, describe(state))
    ours = enc.state_dict()
    for key, value in converted.items():  # every non-AaPE weight is M2D's
        assert torch.equal(ours[key], value), key
    for key, value in alias_before.items():  # the alias branch is left fresh
        assert torch.equal(enc.stem.state_dict()[key], value), key
    teacher = hp["teacher"].module.state_dict()
    for key, value in target.items():
        assert torch.equal(teacher[key], value), key
    hp["opt_class"].keywords["lr"] = 1e-3
    brain = AaSPBrain(hp["modules"], hp["opt_class"], hp,
                      run_opts={"noprogressbar": True, "device": "cpu"},
                      checkpointer=hp["checkpointer"])
    clips = [{"id": str(i), "sig": torch.randn(63 * 160)} for i in range(4)]
    brain.fit(hp["epoch_counter"], clips, clips[:2],
              train_loader_kwargs={"batch_size": 2, "collate_fn": PaddedBatch},
              valid_loader_kwargs={"batch_size": 2, "collate_fn": PaddedBatch})
    assert brain.optimizer_step == 2 and brain.skipped_steps == 0
    assert math.isfinite(brain.train_stats["loss"])


def test_init_from_refuses_other_statistics_and_a_plain_layout(tmp_path):
    import pathlib

    from hyperpyyaml import load_hyperpyyaml

    from aasp_sb.m2d import apply_init_from

    state = fake_m2d_state(embed_dim=32, depth=2, grid=(5, 4), hidden=128)
    state["norm_stats"] = torch.tensor([-5.0, 3.0])
    path = save_like_m2d(tmp_path, state, folder="m2d_vit_base-80x64p16x16-x")
    yaml = pathlib.Path(__file__).parents[1] / "hparams" / "aasp_tiny.yaml"
    base = {"data_folder": str(tmp_path), "output_folder": str(tmp_path / "run"),
            "embed_dim": 32, "depth": 2, "num_heads": 2, "crop_frames": 64, "aape_modes": 4,
            "predictor_dim": 32, "predictor_depth": 1, "predictor_heads": 2,
            "init_from": str(path)}
    hp = load_hyperpyyaml(yaml.read_text(), {**base, "cls_token": True, "pos_layout": "time_freq"})
    with pytest.raises(M2DError, match="--norm_mean=-5.0 --norm_std=3.0"):
        apply_init_from(hp)
    hp = load_hyperpyyaml(yaml.read_text(), {**base, "norm_mean": -5.0, "norm_std": 3.0})
    with pytest.raises(M2DError, match="cls_token=True"):
        apply_init_from(hp)


def test_finetuning_from_an_m2d_checkpoint_loads_its_encoder(tmp_path, caplog):
    """recipes/finetune/train.py --pretrained_path=<M2D checkpoint-*.pth>."""
    import logging
    import pathlib

    from aasp_sb.data.demo import make_demo_corpus
    from aasp_sb.recipe_import import import_recipe

    root = pathlib.Path(__file__).resolve().parents[1]
    state = fake_m2d_state(embed_dim=64, depth=1, grid=(5, 4), seed=6)
    path = save_like_m2d(tmp_path, state, folder="m2d_vit_base-80x64p16x16-x")
    corpus = tmp_path / "corpus"
    make_demo_corpus(str(corpus), num_per_class=3, seconds=(0.4, 0.8),
                     classes=("tone_low", "tone_high"))
    recipe = import_recipe(root / "recipes" / "finetune" / "train.py", "aasp_ft_m2d")
    out = tmp_path / "ft"
    with caplog.at_level(logging.INFO):
        recipe.main([
            str(root / "hparams" / "finetune" / "demo.yaml"),
            f"--data_folder={corpus}", f"--output_folder={out}",
            f"--prep_folder={out}/data", f"--pretrained_path={path}",
            "--number_of_epochs=1", "--batch_size=4", "--crop_seconds=0.3",
            "--warmup_epochs=0", "--device=cpu",
        ])
    log = (out / "log.txt").read_text()
    assert "Loaded pre-trained" in log and str(path) in log, log[-2000:]
    hp = (out / "hyperparams.yaml").read_text()
    assert "cls_token: true" in hp.lower() and "pos_layout: time_freq" in hp


def test_embedding_cli_takes_an_m2d_checkpoint(tmp_path):
    import numpy as np
    import soundfile as sf

    from aasp_sb.embed import run

    state = fake_m2d_state(**SMALL, seed=8)
    path = save_like_m2d(tmp_path, state, folder="m2d_vit_base-80x208p16x8-x")
    lines = ["ID,wav"]  # no duration column: lengths come from the headers
    for i, seconds in enumerate((0.5, 2.5, 1.0)):
        wav = tmp_path / f"c{i}.wav"
        sf.write(str(wav), np.random.default_rng(i).standard_normal(int(seconds * 16000)) * 0.1, 16000)
        lines.append(f"c{i},{wav}")
    csv = tmp_path / "clips.csv"
    csv.write_text("\n".join(lines) + "\n")
    info = run(["--m2d-checkpoint", str(path), "--csv", str(csv), "--output",
                str(tmp_path / "e.npy"), "--device", "cpu", "--no-progress", "--batch-size", "2"])
    emb = np.load(info["output"])
    assert emb.shape == (3, 5 * SMALL["embed_dim"])
    # row order is the manifest's although the clips were batched longest first
    from aasp_sb.inference import load_encoder

    enc = load_encoder(m2d_checkpoint=str(path), device="cpu")
    one = enc.embed_batch(torch.as_tensor(sf.read(str(tmp_path / "c1.wav"))[0], dtype=torch.float32)[None])
    assert np.allclose(emb[1], one[0].numpy(), atol=1e-4)


def test_hear_module_loads_an_m2d_checkpoint(tmp_path):
    from aasp_sb import hear

    state = fake_m2d_state(**SMALL, seed=9)
    path = save_like_m2d(tmp_path, state, folder="m2d_vit_base-80x208p16x8-x")
    model = hear.load_model(str(path))
    audio = torch.randn(2, 16000 * 2) * 0.1
    emb, ts = hear.get_timestamp_embeddings(audio, model)
    assert emb.shape[0] == 2 and emb.shape[-1] == model.timestamp_embedding_size
    assert hear.get_scene_embeddings(audio, model).shape == (2, model.scene_embedding_size)
