"""Interruption, atomic checkpoints, non-finite losses, safe loading, determinism."""

import json
import os
import pickle
import signal
import subprocess
import sys
import time

import pytest
import torch
from pretrain_utils import ROOT, TINY, TINY_OVERRIDES, load_recipe, recipe_args

from aasp_sb.brains.pretrain import AaSPBrain, NonFiniteLossError
from aasp_sb.checkpoints import (
    AtomicCheckpointer,
    UnsafeCheckpointError,
    safe_torch_load,
)
from aasp_sb.data.demo import make_unlabeled_folder
from aasp_sb.pretrained import load_pretrained


@pytest.fixture(scope="module")
def audio_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("audio")
    make_unlabeled_folder(str(folder), n=16, seconds=(0.5, 2.0), seed=5)
    return folder


def read_jsonl(path):
    return [json.loads(line) for line in open(path, encoding="utf-8")]


def intra_epoch_checkpoints(out):
    save = out / "save"
    if not save.exists():
        return []
    return [p for p in save.iterdir() if p.name.startswith("CKPT") and (p / "CKPT.yaml").exists()
            and "intra_epoch" in (p / "CKPT.yaml").read_text()]


def test_sigkill_mid_epoch_resumes_with_the_same_state(audio_folder, tmp_path):
    common = dict(number_of_epochs=3, ckpt_interval_steps=1, batch_size=2)
    ref = load_recipe().main(recipe_args(audio_folder, tmp_path / "ref", **common))

    out = tmp_path / "killed"
    cmd = [sys.executable, str(ROOT / "recipes" / "pretrain" / "train.py")]
    cmd += recipe_args(audio_folder, out, **common)
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    # wait until the run is inside epoch 2 with an intra-epoch checkpoint
    while time.time() < deadline:
        metrics = out / "metrics.jsonl"
        if metrics.exists() and len(read_jsonl(metrics)) >= 9 and intra_epoch_checkpoints(out):
            break
        if proc.poll() is not None:
            pytest.fail("the run ended before it could be killed")
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    steps_before = len(read_jsonl(out / "metrics.jsonl"))
    assert steps_before < ref.optimizer_step

    resumed = load_recipe().main(recipe_args(audio_folder, out, **common))
    assert resumed.optimizer_step == ref.optimizer_step
    for name in ("teacher", "encoder"):
        a, b = getattr(ref.hparams, name).state_dict(), getattr(resumed.hparams, name).state_dict()
        for key in a:
            assert torch.allclose(a[key], b[key], atol=1e-6), (name, key)
    assert resumed.lr_scheduler.current_lr == pytest.approx(ref.lr_scheduler.current_lr)


def test_kill_while_saving_leaves_previous_checkpoint_usable(tmp_path, monkeypatch):
    model = torch.nn.Linear(3, 3)
    other = torch.nn.Linear(2, 2)
    ckpt = AtomicCheckpointer(tmp_path, recoverables={"model": model, "other": other})
    ckpt.save_checkpoint(meta={"v": 1.0})
    good = {k: v.clone() for k, v in model.state_dict().items()}
    with torch.no_grad():
        model.weight.add_(1.0)

    def dying_save(obj, path):
        raise KeyboardInterrupt("killed while saving")

    ckpt.custom_save_hooks["other"] = dying_save
    with pytest.raises(KeyboardInterrupt):
        ckpt.save_checkpoint(meta={"v": 2.0})
    del ckpt.custom_save_hooks["other"]

    fresh = torch.nn.Linear(3, 3)
    reader = AtomicCheckpointer(tmp_path, recoverables={"model": fresh, "other": torch.nn.Linear(2, 2)})
    loaded = reader.recover_if_possible()
    assert loaded.meta["v"] == 1.0
    assert torch.equal(fresh.weight, good["weight"])
    # the next save cleans up the half-written folder
    reader.save_checkpoint(meta={"v": 3.0})
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".tmp-")]


class _Payload:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_checkpoint_that_executes_code_is_refused(tmp_path):
    marker = tmp_path / "pwned"
    evil = tmp_path / "encoder.ckpt"
    with open(evil, "wb") as f:
        pickle.dump({"w": _Payload(marker)}, f)
    with pytest.raises(UnsafeCheckpointError, match="encoder.ckpt"):
        safe_torch_load(evil)
    assert not marker.exists()


def test_run_folder_with_malicious_weights_is_refused(audio_folder, tmp_path):
    out = tmp_path / "run"
    load_recipe().main(recipe_args(audio_folder, out, number_of_epochs=1))
    ckpt = next(p for p in (out / "save").iterdir() if p.name.startswith("CKPT"))
    marker = tmp_path / "pwned"
    torch.save({"x": _Payload(marker)}, ckpt / "encoder.ckpt")
    with pytest.raises(UnsafeCheckpointError):
        load_pretrained(out)
    assert not marker.exists()


def test_nonfinite_loss_skips_update_and_stops_after_patience(audio_folder, tmp_path, monkeypatch):
    original = AaSPBrain.compute_objectives
    state = {"calls": 0, "snapshots": []}

    def flaky(self, predictions, batch, stage):
        loss = original(self, predictions, batch, stage)
        if stage.name == "TRAIN":
            state["calls"] += 1
            teacher = {k: v.clone() for k, v in self.modules.teacher.state_dict().items()}
            state["snapshots"].append((teacher, self.optimizer_step))
            if state["calls"] == 3:  # one bad step: must be skipped
                return loss * float("nan")
            if state["calls"] >= 6:  # then bad forever: must stop
                return loss * float("inf")
        return loss

    monkeypatch.setattr(AaSPBrain, "compute_objectives", flaky)
    with pytest.raises(NonFiniteLossError, match="nonfinite_patience=3"):
        load_recipe().main(recipe_args(audio_folder, tmp_path / "run", nonfinite_patience=3,
                                        number_of_epochs=5, batch_size=2))
    metrics = read_jsonl(tmp_path / "run" / "metrics.jsonl")
    # batches 1, 2, 4, 5 were stepped; batch 3 was skipped, then 3 bad ones in a row stop
    assert [m["step"] for m in metrics] == [1, 2, 3, 4]
    assert state["calls"] == 8
    teacher3, step3 = state["snapshots"][2]
    teacher4, step4 = state["snapshots"][3]
    assert step3 == step4 == 2  # no optimiser step for the bad batch
    for key in teacher3:  # and no EMA update
        assert torch.equal(teacher3[key], teacher4[key]), key


def test_same_seed_gives_same_masks_losses_and_weights(audio_folder, tmp_path):
    a = load_recipe().main(recipe_args(audio_folder, tmp_path / "a", number_of_epochs=1))
    b = load_recipe().main(recipe_args(audio_folder, tmp_path / "b", number_of_epochs=1))
    la = read_jsonl(tmp_path / "a" / "metrics.jsonl")
    lb = read_jsonl(tmp_path / "b" / "metrics.jsonl")
    assert [m["loss"] for m in la] == [m["loss"] for m in lb]
    for key, value in a.hparams.encoder.state_dict().items():
        assert torch.equal(value, b.hparams.encoder.state_dict()[key]), key


@pytest.fixture(scope="module")
def tiny_run(audio_folder, tmp_path_factory):
    out = tmp_path_factory.mktemp("tinyrun") / "run"
    load_recipe().main(recipe_args(audio_folder, out, number_of_epochs=1))
    return out


@pytest.mark.parametrize(
    "overrides,key",
    [({"use_aape": False}, "use_aape"), ({"n_mels": 64}, "n_mels"), ({"embed_dim": 64}, "embed_dim")],
)
def test_checkpoint_of_another_architecture_gives_one_clear_error(tiny_run, overrides, key):
    # a model YAML that differs from the run's in one key, pointed at the run's weights
    model = dict(TINY_OVERRIDES, data_folder="unused", **overrides)
    with pytest.raises(ValueError, match="encoder.ckpt") as err:
        load_pretrained(tiny_run, hparams_file=TINY, overrides=model)
    assert key in str(err.value)
    load_pretrained(tiny_run, hparams_file=TINY, overrides=dict(TINY_OVERRIDES, data_folder="x"))


@pytest.mark.parametrize(
    "override,match",
    [("--patch_size=24", "patch_size"), ("--mask_ratio=1.5", "mask_ratio"), ("--num_masks=0", "num_masks")],
)
def test_bad_configuration_fails_before_any_training(audio_folder, tmp_path, override, match):
    out = tmp_path / "bad"
    args = recipe_args(audio_folder, out) + [override]
    with pytest.raises(ValueError, match=match):
        load_recipe().main(args)
    assert not (out / "save").exists() or not any((out / "save").iterdir())


def test_bad_audio_in_the_data_folder_never_stops_pretraining(tmp_path):
    import numpy as np
    import soundfile as sf

    folder = tmp_path / "audio"
    make_unlabeled_folder(str(folder), n=8, seconds=(0.5, 1.5), seed=9)
    nan = np.random.default_rng(0).standard_normal(16000).astype("float32")
    nan[::500] = np.nan  # in every crop window
    sf.write(str(folder / "nan.wav"), nan, 16000, subtype="FLOAT")  # header fine, samples bad
    sf.write(str(folder / "tiny.wav"), np.zeros(400, dtype="float32"), 16000)  # < one patch
    sf.write(str(folder / "silent.wav"), np.zeros(16000, dtype="float32"), 16000)
    (folder / "corrupt.wav").write_bytes(b"RIFF\x00\x00garbage")  # unreadable header
    (folder / "empty.flac").write_bytes(b"")
    out = tmp_path / "run"
    brain = load_recipe().main(recipe_args(folder, out, number_of_epochs=1, batch_size=2))
    assert brain.optimizer_step > 0
    assert any(p.endswith("nan.wav") for p in brain.skipped_clips)
    prep_skips = (out / "data" / "train_skipped.txt").read_text()
    assert "corrupt.wav" in prep_skips and "empty.flac" in prep_skips


def test_ckpt_interval_minutes_saves_intra_epoch_checkpoints(audio_folder, tmp_path, monkeypatch):
    yaml = tmp_path / "tiny_minutes.yaml"
    yaml.write_text(TINY.read_text().replace(
        "ckpt_interval_minutes: 0 ", "ckpt_interval_minutes: 0.00001 "))
    saves = []
    original = AtomicCheckpointer.save_checkpoint

    def recording(self, meta=None, end_of_epoch=True, *args, **kwargs):
        saves.append(end_of_epoch)
        return original(self, meta, end_of_epoch, *args, **kwargs)

    monkeypatch.setattr(AtomicCheckpointer, "save_checkpoint", recording)
    args = recipe_args(audio_folder, tmp_path / "run", number_of_epochs=1)
    args[0] = str(yaml)
    brain = load_recipe().main(args)
    assert saves.count(False) >= brain.optimizer_step - 1  # about one per step
    assert saves.count(True) == 1
