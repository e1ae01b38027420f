"""Downstream settings pinned to EVAR's and M2D's source (issue 19).

Every test names the file of nttcslab/eval-audio-repr (EVAR) or nttcslab/m2d
whose behaviour it pins; values are derived from that source's own text
(quoted where it is a command line or a config line), not typed twice.
"""

import csv
import json
import logging
import pathlib
import random
import re

import pytest
import task_fixtures as fx
import torch
import yaml

from aasp_sb.brains.finetune import (
    SELECTION,
    encode_pooled,
    protocol_split,
    structured_token_mask,
    trainable_summary,
)
from aasp_sb.data.tasks import get_task, prepare_task, valid_source
from aasp_sb.data.tasks.cremad import (
    EVAR_TEST_ACTORS,
    EVAR_VALID_ACTORS,
    evar_actor_split,
)
from aasp_sb.evaluation.linear_probe import (
    EVAR_DEFAULT_LR,
    EVAR_M2D_LR,
    EarlyStopping,
    StandardScaler,
    train_linear_probe,
)
from aasp_sb.recipe_import import import_recipe

ROOT = pathlib.Path(__file__).resolve().parents[1]
HPARAMS = ROOT / "hparams"


def plain_keys(path):
    """Top-level plain (non-``!``) keys of a HyperPyYAML file."""
    text = pathlib.Path(path).read_text(encoding="utf-8")
    return yaml.safe_load("\n".join(
        line for line in text.splitlines()
        if line[:1].isalpha() and "!" not in line.split("#")[0]
    ))


def load_recipe():
    return import_recipe(ROOT / "recipes/finetune/train.py", "aasp_ft_evar")


# ----------------------------------------------------------------- CREMA-D
#: Rows of EVAR's evar/metadata/cremad.csv, verbatim (one per part, and the
#: first and last file of the list).
EVAR_CREMAD_ROWS = """file_name,label,speaker_id,split
1001_DFA_ANG_XX.wav,ANG,1001,test
1002_DFA_ANG_XX.wav,ANG,1002,train
1009_DFA_ANG_XX.wav,ANG,1009,valid
1082_DFA_ANG_XX.wav,ANG,1082,valid
1083_DFA_ANG_XX.wav,ANG,1083,test
1091_WSI_SAD_XX.wav,SAD,1091,train
"""


def test_cremad_actors_are_evars():
    """EVAR evar/metadata/cremad.csv (actor -> split) and utils/make_metadata.py."""
    parts = evar_actor_split()
    for row in csv.DictReader(EVAR_CREMAD_ROWS.splitlines()):
        assert parts[row["speaker_id"]] == row["split"], row
    # make_metadata.py (__making_cremad_metadata) prints "63 9 19 91" for the
    # actors and "Train:valid:test = 0.69:0.10:0.21, total=7438" for the clips
    counts = [list(parts.values()).count(p) for p in ("train", "valid", "test")]
    assert counts + [len(parts)] == [63, 9, 19, 91]
    per_actor = 7438 / 91  # about 82 clips each
    shares = [round(c * per_actor / 7438, 2) for c in counts]
    assert shares == [0.69, 0.10, 0.21]
    assert not set(EVAR_VALID_ACTORS) & set(EVAR_TEST_ACTORS)


def test_training_seed_never_moves_a_split(tmp_path):
    """EVAR's split is fixed (make_metadata.py draws it once); ours too."""
    fx.make_cremad(tmp_path / "CREMA-D")
    recipe = load_recipe()
    tests = []
    for seed in (1, 7):
        keys = {
            "task": "cremad",
            "data_folder": str(tmp_path / "CREMA-D"),
            "prep_folder": str(tmp_path / f"prep{seed}"),
            "seed": seed,  # the training seed: must not reach preparation
            "prepare_options": {"split": "seeded"},  # a split that reads its seed
        }
        info, splits, _ = recipe.prepare_data(keys)
        tests.append(pathlib.Path(splits[0].test_csv).read_text())
        assert splits[0].name == "seeded_actors_seed0"  # prep_seed, default 0
    assert tests[0] == tests[1]
    # the fine-tuning YAMLs share one prep folder across seeds
    text = (HPARAMS / "finetune" / "cremad.yaml").read_text(encoding="utf-8")
    folders = {
        s: recipe.read_keys(text, {"seed": s, "data_folder": "/d"})
        for s in (1, 2)
    }
    assert folders[1]["output_folder"] != folders[2]["output_folder"]
    prep = {pathlib.Path(k["prep_folder"]).resolve() for k in folders.values()}
    assert len(prep) == 1 and folders[1]["prep_seed"] == 0


# ------------------------------------------------------------ VoxCeleb1 crop
def test_vc1_is_validated_and_tested_on_the_first_8_2_s():
    """EVAR evar/ds_tasks.py ('vc1': unit_sec 8.2); M2D util/ft-vc1.sh dur_frames=821."""
    vc1 = plain_keys(HPARAMS / "finetune" / "vc1.yaml")
    unit_sec = get_task("vc1").info.clip_seconds  # EVAR's unit_sec
    assert vc1["eval_crop_seconds"] == vc1["crop_seconds"] == unit_sec
    # M2D's command: dur_frames=821 = 8.2 s at 100 frames/s, centred STFT
    assert round(vc1["eval_crop_seconds"] * 100) + 1 == 821


def test_eval_crop_keeps_the_start_of_the_clip(tmp_path):
    """EVAR evar/data.py crops test clips from the start (unit_samples)."""
    import numpy as np
    import soundfile as sf

    from aasp_sb.data.folder import write_csv
    from aasp_sb.data.pipeline import labelled_dataset

    wav = tmp_path / "a.wav"
    sig = np.random.RandomState(0).randn(16000 * 3).astype("float32") * 0.1
    sf.write(wav, sig, 16000)
    write_csv(tmp_path / "t.csv", [
        {"ID": "a", "duration": 3.0, "wav": str(wav), "label": "x"}
    ], ["ID", "duration", "wav", "label"])
    ds = labelled_dataset(
        str(tmp_path / "t.csv"), 1.5, classes=["x"], mode="start", pad="none",
        on_error="zero",
    )
    ds.set_output_keys(["sig"])
    out = ds[0]["sig"]
    assert out.shape[0] == 24000
    torch.testing.assert_close(out, torch.from_numpy(sig[:24000]), atol=1e-4, rtol=0)


# ------------------------------------------------------ structured training mask
def m2d_counts(Fp, Tp, ratio, u):
    """NF, NT of m2d/runtime_audio.py random_structured_mask for a draw ``u``."""
    nf = min(Fp - 1, int(Fp * (ratio + 1.0 / Fp) * u))
    return nf, int(Tp * max(ratio + 0.5 / Tp - nf / Fp, 0.0))


def test_structured_mask_has_m2ds_geometry():
    """m2d/runtime_audio.py random_structured_mask (set_random_structured_mask)."""
    Fp, Tp, ratio = 5, 38, 0.5  # 80 mels x 608 frames, 16x16 patches
    seen_nf = set()
    for seed in range(40):
        g = torch.Generator().manual_seed(seed)
        u = float(torch.rand((), generator=torch.Generator().manual_seed(seed)))
        mask = structured_token_mask(3, (Fp, Tp), ratio, g)
        rows = mask.all(dim=2)  # [B, Fp]
        cols = mask.all(dim=1)  # [B, Tp]
        # only whole rows and whole columns are masked
        assert bool((~mask | rows[:, :, None] | cols[:, None, :]).all())
        nf, nt = rows.sum(1), cols.sum(1)
        # the same counts for every clip of the batch, at their own places
        assert len(set(nf.tolist())) == 1 and len(set(nt.tolist())) == 1
        assert (int(nf[0]), int(nt[0])) == m2d_counts(Fp, Tp, ratio, u)
        seen_nf.add(int(nf[0]))
    assert len(seen_nf) > 2  # NF is drawn, not fixed


def test_structured_token_drop_keeps_the_unmasked_grid():
    from aasp_sb.lobes.encoder import AudioViT
    from aasp_sb.lobes.patch import PatchEmbed

    enc = AudioViT(PatchEmbed(80, 16, 16), 16, depth=1, num_heads=2, max_frames=64).eval()
    x = torch.randn(2, 64, 80)
    g = torch.Generator().manual_seed(3)
    out = encode_pooled(enc, x, token_drop=0.5, generator=g, token_drop_mode="structured")
    assert out.shape == (2, 16) and torch.isfinite(out).all()
    with pytest.raises(ValueError, match="token_drop_mode"):
        encode_pooled(enc, x, token_drop=0.5, token_drop_mode="rows")


# ---------------------------------------------------------- probe tie rule
def evar_early_stopping(scores, patience):
    """EarlyStopping.on_epoch_end of EVAR evar/utils/torch_mlp_clf2.py, transcribed.

    Returns (best epoch, number of epochs run).
    """
    best_value, best_epoch, wait = 0, None, 0
    for epoch, value in enumerate(scores):
        if value >= best_value:
            best_epoch, best_value, wait = epoch, value, 1
        else:
            if wait >= patience:
                return best_epoch, epoch + 1
            wait += 1
    return best_epoch, len(scores)


def ours(scores, patience, ties="latest"):
    stop = EarlyStopping(patience, ties)
    for epoch, value in enumerate(scores):
        _, done = stop.step(value, epoch)
        if done:
            return stop.best_epoch, epoch + 1
    return stop.best_epoch, len(scores)


def test_probe_tie_rule_is_evars():
    """EVAR evar/utils/torch_mlp_clf2.py: `>=` (ties reset patience, keep the latest)."""
    rng = random.Random(0)
    for _ in range(300):
        scores = [rng.choice([0.5, 0.6, 0.7]) for _ in range(rng.randint(1, 40))]
        patience = rng.randint(1, 6)
        assert ours(scores, patience) == evar_early_stopping(scores, patience), (
            scores, patience
        )
    # the strict rule stops earlier on a plateau and keeps the first epoch
    plateau = [0.5, 0.7] + [0.7] * 5 + [0.6] * 5
    assert ours(plateau, 3) == (6, 10)
    assert ours(plateau, 3, ties="first") == (1, 5)


def test_probe_keeps_the_latest_tied_epoch():
    """train_linear_probe with EVAR's rule on a validation set that saturates."""
    g = torch.Generator().manual_seed(0)
    x = torch.cat([torch.randn(20, 4, generator=g) + 4, torch.randn(20, 4, generator=g) - 4])
    y = torch.tensor([0] * 20 + [1] * 20)
    _, _, hist = train_linear_probe(x, y, x, y, 2, lr=0.1, max_epochs=30, patience=5)
    scores = hist["valid_score"]
    assert scores.count(1.0) > 1  # ties at the top
    assert hist["best_epoch"] == len(scores) - 1  # never stops: ties reset it
    _, _, first = train_linear_probe(
        x, y, x, y, 2, lr=0.1, max_epochs=30, patience=5, ties="first"
    )
    assert first["best_epoch"] == first["valid_score"].index(1.0)
    assert first["epochs"] == first["best_epoch"] + 5 + 1


# ---------------------------------------------------------------- probe lr
#: EVAR config/m2d.yaml and config/byola.yaml, the probe lr lines verbatim.
EVAR_M2D_YAML_LINE = "lr_lineareval: 0.00003"
EVAR_BYOLA_YAML_LINE = "lr_lineareval: 0.0003"


def test_probe_lr_is_evars_m2d_config():
    """EVAR config/m2d.yaml lr_lineareval for M2D's 3840-d features."""
    m2d = yaml.safe_load(EVAR_M2D_YAML_LINE)["lr_lineareval"]
    generic = yaml.safe_load(EVAR_BYOLA_YAML_LINE)["lr_lineareval"]
    assert EVAR_M2D_LR == m2d and EVAR_DEFAULT_LR == generic
    recipe = plain_keys(HPARAMS / "linear_eval" / "evar.yaml")
    assert recipe["lr"] == m2d
    assert recipe["patience"] == 20  # config/m2d.yaml early_stop_epochs
    text = (HPARAMS / "linear_eval" / "evar.yaml").read_text(encoding="utf-8")
    assert "config/m2d.yaml" in text.split("\nlr:")[1].splitlines()[0]


# ------------------------------------------------------------ float32 scaler
def test_chunked_scaler_equals_the_float64_one():
    g = torch.Generator().manual_seed(0)
    # large offset, small spread: a float32 one-pass variance would lose digits
    x = (1000.0 + 0.01 * torch.randn(1003, 7, generator=g)).float()
    x[:, 3] = 5.0  # constant column keeps scale 1
    ref_mean = x.double().mean(0)
    ref_std = x.double().std(0, unbiased=False)
    ref_std = torch.where(ref_std > 1e-12 * ref_mean.abs().clamp_min(1.0), ref_std, 1.0)
    for rows in (1, 10, 333, 5000):
        s = StandardScaler().fit(x, chunk_rows=rows)
        torch.testing.assert_close(s.mean, ref_mean.float(), rtol=0, atol=0)
        torch.testing.assert_close(s.scale, ref_std.float(), rtol=1e-6, atol=0)
    assert s.scale[3] == 1.0


# ------------------------------------------------------------------ GTZAN
def test_gtzan_fallback_warns_and_names_its_split(tmp_path, caplog):
    fx.make_gtzan(tmp_path / "gtzan", lists=False, corrupt=False)
    with caplog.at_level(logging.WARNING):
        _, splits = prepare_task("gtzan", tmp_path / "gtzan", tmp_path / "o")
    assert splits[0].name == "stratified"
    assert any(
        r.levelno == logging.WARNING and "NOT artist-filtered" in r.getMessage()
        for r in caplog.records
    )


# ------------------------------------------------------- fine-tuning protocol
def test_protocol_split_puts_the_holdout_back_and_validates_on_test(tmp_path):
    """EVAR finetune.py: `if len(valid_loader.dataset) == 0: valid_loader = test_loader`."""
    fx.make_esc50(tmp_path / "ESC-50")
    _, splits = prepare_task("esc50", tmp_path / "ESC-50", tmp_path / "o")
    s = splits[0]
    assert valid_source("esc50") == "holdout" and valid_source("nsynth") == "split"
    evar, sel = protocol_split(s, "evar", valid_source("esc50"), tmp_path / "run")
    assert sel == "evar_holdout" and "optimistic" in SELECTION[sel]
    assert evar.valid_csv == evar.test_csv == s.test_csv

    def ids(path):
        return [r["ID"] for r in csv.DictReader(open(path, encoding="utf-8"))]

    assert sorted(ids(evar.train_csv)) == sorted(ids(s.train_csv) + ids(s.valid_csv))
    assert protocol_split(s, "clean", "holdout") == (s, "clean")
    assert protocol_split(s, "evar", "split") == (s, "evar_split")
    with pytest.raises(ValueError, match="protocol"):
        protocol_split(s, "paper", "split")


def valid_scores(train_log):
    return [
        float(v) for v in re.findall(r"valid accuracy: ([0-9.e+-]+)", train_log.read_text())
    ]


def test_evar_protocol_reports_the_best_test_epoch(tmp_path):
    """On a toy ESC-50 fold, `evar` selects on test (EVAR finetune.py), `clean` does not."""
    fx.make_esc50(tmp_path / "ESC-50")
    recipe = load_recipe()
    common = [
        "--embed_dim=32", "--depth=1", "--num_heads=2", "--aape_modes=4",
        "--max_frames=64", "--batch_size=4", "--test_batch_size=8",
        "--crop_seconds=0.3", "--num_workers=0", "--warmup_epochs=0",
        "--number_of_epochs=2", "--lr=0.5", "--folds=fold1",
        "--freq_mask_width=8", "--time_mask_width=10",
        "--device=cpu", "--noprogressbar",
    ]
    res = {}
    for protocol in ("evar", "clean"):
        out = tmp_path / protocol
        recipe.main([
            str(HPARAMS / "finetune" / "esc50.yaml"),
            f"--data_folder={tmp_path / 'ESC-50'}", f"--output_folder={out}",
            f"--prep_folder={tmp_path / 'prep'}", f"--protocol={protocol}",
        ] + common)
        res[protocol] = json.loads((out / "fold1" / "results.json").read_text())
        res[protocol]["valid"] = valid_scores(out / "fold1" / "train_log.txt")
    evar, clean = res["evar"], res["clean"]
    assert evar["optimistic"] is True and clean["optimistic"] is False
    assert evar["selection"] == SELECTION["evar_holdout"]
    # evar: the validation set is the test set, the reported number its best epoch
    assert len(evar["valid"]) == 2
    # (the train log rounds to 3 significant digits)
    assert evar["test"] == pytest.approx(max(evar["valid"]), abs=5e-3)
    assert evar["best_valid"] == pytest.approx(evar["test"], abs=1e-9)
    assert evar["num_test"] == clean["num_test"]
    # clean: the best epoch is chosen on the held-out part of train
    assert clean["best_valid"] == pytest.approx(max(clean["valid"]), abs=5e-3)


# -------------------------------------------------------- issue 16 messages
def tiny_brain(**hp):
    from speechbrain.utils.epoch_loop import EpochCounter

    from aasp_sb.brains.finetune import ClassifierHead, FinetuneBrain
    from aasp_sb.features import Features
    from aasp_sb.lobes.aape import make_stem
    from aasp_sb.lobes.encoder import AudioViT

    stem = make_stem(True, n_mels=80, patch_size=16, embed_dim=32, num_modes=4)
    enc = AudioViT(stem, embed_dim=32, depth=1, num_heads=2, max_frames=64)
    hparams = {
        "multilabel": False, "num_classes": 3, "lr": 1e-3, "weight_decay": 0.0,
        "layer_decay": None, "warmup_epochs": 0, "number_of_epochs": 1,
        "epoch_counter": EpochCounter(1),
    }
    hparams.update(hp)
    modules = {"compute_features": Features(), "encoder": enc, "head": ClassifierHead(32, 3)}
    return FinetuneBrain(modules, torch.optim.AdamW, hparams,
                         run_opts={"noprogressbar": True, "device": "cpu"})


def toy_loader():
    from speechbrain.dataio.batch import PaddedBatch
    from torch.utils.data import DataLoader

    g = torch.Generator().manual_seed(0)
    data = [{"id": f"u{i}", "sig": 0.1 * torch.randn(3200, generator=g),
             "label": torch.tensor([i % 3])} for i in range(4)]
    return DataLoader(data, batch_size=4, collate_fn=PaddedBatch)


def test_trainable_count_is_the_frozen_one(caplog):
    with caplog.at_level(logging.INFO):
        brain = tiny_brain(freeze_stem=True)
        brain.fit(brain.hparams.epoch_counter, toy_loader())
    enc = brain.modules.encoder
    trainable = sum(p.numel() for p in enc.parameters() if p.requires_grad)
    trainable += sum(p.numel() for p in brain.modules.head.parameters())
    total = sum(p.numel() for p in enc.parameters())
    total += sum(p.numel() for p in brain.modules.head.parameters())
    assert trainable < total
    assert brain.trainable_counts["all"] == (trainable, total)
    assert trainable_summary({"e": enc, "h": brain.modules.head})["all"] == (trainable, total)
    line = next(r.getMessage() for r in caplog.records
                if "Trainable parameters after freezing" in r.getMessage())
    assert f"{trainable:,} of {total:,}" in line and "[stem frozen]" in line
    # SpeechBrain's own line (printed in Brain.__init__) is true as well
    sb_line = next(r.getMessage() for r in caplog.records
                   if "Trainable Parameters represent" in r.getMessage())
    assert f"{100 * trainable / total:.4f}%" in sb_line


def test_warmup_longer_than_the_run_warns(caplog):
    brain = tiny_brain(warmup_epochs=5, number_of_epochs=1)
    with caplog.at_level(logging.WARNING):
        brain.fit(brain.hparams.epoch_counter, toy_loader())
    assert any("warmup_epochs=5 is longer than the run" in r.getMessage()
               for r in caplog.records)
    caplog.clear()
    brain = tiny_brain(warmup_epochs=0)
    with caplog.at_level(logging.WARNING):
        brain.fit(brain.hparams.epoch_counter, toy_loader())
    assert not any("warmup_epochs" in r.getMessage() for r in caplog.records)



# ------------------------------------------------------------- long inputs
def test_long_inputs_extend_is_one_sequence():
    """M2D encodes AS-20K (dur_frames=1001) and VC1 (821) whole (util/ft-*.sh)."""
    from aasp_sb.lobes.encoder import AudioViT
    from aasp_sb.lobes.layers import sincos_pos_embed_2d
    from aasp_sb.lobes.patch import PatchEmbed

    torch.manual_seed(0)
    chunked = AudioViT(PatchEmbed(80, 16, 16), 16, 1, 2, max_frames=64).eval()
    extended = AudioViT(PatchEmbed(80, 16, 16), 16, 1, 2, max_frames=64,
                        long_inputs="extend").eval()
    extended.load_state_dict(chunked.state_dict())
    short = torch.randn(1, 64, 80)
    torch.testing.assert_close(extended(short).tokens, chunked(short).tokens)
    x = torch.randn(1, 160, 80)
    y = x.clone()
    y[:, 100:] += 3.0  # change only the second chunk
    for enc, crosses in ((chunked, False), (extended, True)):
        a, b = enc(x).tokens.view(5, 10, 16), enc(y).tokens.view(5, 10, 16)
        assert a.shape == (5, 10, 16)
        # the first chunk's tokens see the second chunk only in one sequence
        assert (not torch.allclose(a[:, :4], b[:, :4], atol=1e-5)) == crosses
    # extended positions: the training table, continued
    wide = extended.positions((5, 10)).view(5, 10, 16)
    torch.testing.assert_close(wide[:, :4], extended.pos_embed.view(5, 4, 16))
    torch.testing.assert_close(wide, sincos_pos_embed_2d(16, 5, 10).view(5, 10, 16))
    with pytest.raises(ValueError, match="long_inputs"):
        AudioViT(PatchEmbed(80, 16, 16), 16, 1, 2, max_frames=64, long_inputs="x")


def test_long_inputs_where_m2d_encodes_whole_clips():
    for name, extend in {"as20k": True, "vc1": True, "esc50": False, "spcv2": False}.items():
        keys = plain_keys(HPARAMS / "finetune" / f"{name}.yaml")
        longest = max(keys["crop_seconds"], keys.get("eval_crop_seconds") or 0)
        assert (keys["long_inputs"] == "extend") == extend, name
        if extend:  # the clips are longer than the pre-training input
            assert round(longest * 100) + 1 > keys["max_frames"], name


# ------------------------------------------------- smaller [M2D] deviations
def test_shared_spec_augment_masks_the_batch_alike_as_torchaudio():
    """EVAR finetune.py SpecAugment: torchaudio masking of the batch tensor."""
    import torchaudio

    from aasp_sb.augment import SpecAugment

    torch.manual_seed(0)
    batch = torch.ones(4, 80, 200)  # EVAR's [B, F, T]
    ta = torchaudio.transforms.FrequencyMasking(30)(batch)  # iid_masks=False
    assert all(torch.equal(ta[0], ta[b]) for b in range(4))  # torchaudio: alike
    ours = SpecAugment(30, 1, 48, 1, shared=True).train()
    g = torch.Generator().manual_seed(1)
    x = torch.ones(4, 200, 80)  # ours: [B, T, F]
    _, (fm, tm) = ours(x, generator=g, return_masks=True)
    assert all(torch.equal(fm[0], fm[b]) and torch.equal(tm[0], tm[b]) for b in range(4))
    per_clip = SpecAugment(30, 1, 48, 1).train()
    _, (fm, tm) = per_clip(x, generator=torch.Generator().manual_seed(1), return_masks=True)
    assert not all(torch.equal(tm[0], tm[b]) for b in range(4))
    # with relative lengths, shared spans stay inside the shortest clip
    lengths = torch.tensor([1.0, 0.5, 1.0, 1.0])
    for seed in range(20):
        _, (_, tm) = ours(x, lengths, torch.Generator().manual_seed(seed), return_masks=True)
        assert not tm[:, 100:].any()


def test_m2d_configs_follow_evars_training_loop():
    """EVAR finetune.py (no clip_grad, no stochastic depth) and evar/data.py (no drop_last)."""
    for name in ("esc50", "as20k", "spcv2", "vc1"):
        keys = plain_keys(HPARAMS / "finetune" / f"{name}.yaml")
        assert keys["max_grad_norm"] == 0.0, name
        assert keys["drop_path"] == 0.0, name
        assert keys["spec_augment_shared"] is True, name
        assert keys["drop_last"] is False, name
        text = (HPARAMS / "finetune" / f"{name}.yaml").read_text(encoding="utf-8")
        assert "mixes log-mel" not in text  # EVAR mixes the waveform batch


def test_eval_crops_follow_evars_unit_sec_where_clips_are_longer():
    """EVAR evar/data.py crops test clips to unit_sec (ds_tasks.py) in fine-tuning too."""
    for name in ("vc1", "cremad"):  # the tasks whose clips exceed unit_sec
        keys = plain_keys(HPARAMS / "finetune" / f"{name}.yaml")
        assert keys["eval_crop_seconds"] == get_task(name).info.clip_seconds, name
