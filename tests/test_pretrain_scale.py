"""The pre-training recipe at scale: prepared data, TensorBoard, M2D start, elastic restarts."""

import os
import shutil
import subprocess
import sys

import pytest
import torch
from pretrain_utils import ROOT, free_port, load_recipe, recipe_args

from aasp_sb.checkpoints import safe_torch_load
from aasp_sb.data.demo import make_unlabeled_folder


@pytest.fixture(scope="module")
def audio_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("audio")
    make_unlabeled_folder(str(folder), n=20, seconds=(0.3, 2.5), seed=3)
    return folder


def test_tensorboard_option_writes_event_files(audio_folder, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import (
        EventAccumulator,
    )

    out = tmp_path / "tb"
    load_recipe().main(recipe_args(audio_folder, out, number_of_epochs=2, use_tensorboard=True))
    events = EventAccumulator(str(out / "tensorboard"))
    events.Reload()
    tags = set(events.Tags()["scalars"])
    for tag in ("step/loss", "step/regression", "step/contrastive", "step/lr",
                "step/ema_decay", "step/clips_per_s", "train/loss", "valid/rankme",
                "epoch/lr"):
        assert tag in tags, (tag, sorted(tags))
    rankme = events.Scalars("valid/rankme")
    assert [e.step for e in rankme] == [1, 2] and all(e.value >= 1.0 for e in rankme)
    assert all(e.value > 0 for e in events.Scalars("step/clips_per_s"))


def test_recipe_reads_a_prepared_corpus_without_preparing(audio_folder, tmp_path):
    from aasp_sb.data.prepare import prepare_corpus

    prep = tmp_path / "prep"
    prepare_corpus(str(audio_folder), str(prep), valid_clips=4, processes=0)
    out = tmp_path / "run"
    brain = load_recipe().main(recipe_args(audio_folder, out, number_of_epochs=1,
                                           prepared_manifest=prep))
    assert not (out / "data").exists()  # the recipe only read the prepared files
    assert brain.optimizer_step == 16 // 4  # 20 clips - 4 held out, batch 4


def test_valid_clips_bounds_the_validation_set(audio_folder, tmp_path):
    out = tmp_path / "run"
    load_recipe().main(recipe_args(audio_folder, out, number_of_epochs=1, valid_clips=3))
    lines = (out / "data" / "valid.csv").read_text().strip().splitlines()
    assert len(lines) - 1 == 3


def test_recipe_starts_from_an_m2d_checkpoint(audio_folder, tmp_path):
    import argparse

    from aasp_sb.m2d import fake_m2d_state

    state = fake_m2d_state(embed_dim=32, depth=1, grid=(5, 4), hidden=128, seed=7)
    path = tmp_path / "m2d_vit_base-80x64p16x16-x" / "checkpoint-300.pth"
    path.parent.mkdir()
    torch.save({"model": state, "args": argparse.Namespace(epochs=300)}, path)
    out = tmp_path / "run"
    brain = load_recipe().main(recipe_args(
        audio_folder, out, number_of_epochs=1, init_from=path, cls_token=True,
        pos_layout="time_freq"))
    assert brain.optimizer_step > 0 and brain.skipped_steps == 0
    log = (out / "log.txt").read_text()
    assert "Initialised from M2D" in log


def torchrun_run(audio_folder, out, *extra):
    torchrun = shutil.which("torchrun", path=os.path.dirname(sys.executable))
    cmd = [torchrun, "--nproc_per_node=2", "--max-restarts=1",
           f"--rdzv-endpoint=127.0.0.1:{free_port()}", "--rdzv-backend=c10d",
           str(ROOT / "recipes" / "pretrain" / "train.py")]
    cmd += recipe_args(audio_folder, out, number_of_epochs=2, batch_size=2,
                       ckpt_interval_steps=2, contrastive_weight=0.0)
    cmd += ["--distributed_backend=gloo", *extra]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)


def final_weights(out):
    ckpts = sorted((out / "save").glob("CKPT+*"))
    return {name: safe_torch_load(ckpts[-1] / f"{name}.ckpt")
            for name in ("encoder", "teacher", "predictor")}


def test_elastic_restart_resumes_from_the_intra_epoch_checkpoint(audio_folder, tmp_path):
    """torchrun --max-restarts 1: rank 1 dies at epoch 2, step 3, after the step-2 checkpoint."""
    ref = torchrun_run(audio_folder, tmp_path / "ref")
    assert ref.returncode == 0, ref.stderr[-3000:]
    out = tmp_path / "killed"
    run = torchrun_run(audio_folder, out, "--debug_exit_at=[1, 2, 3]")
    assert run.returncode == 0, run.stderr[-3000:]
    text = run.stdout + run.stderr
    assert "debug_exit_at [1, 2, 3]: this process exits now" in text
    assert "Loading a checkpoint from" in text  # the restarted group resumed
    a, b = final_weights(tmp_path / "ref"), final_weights(out)
    for name in a:
        for key in a[name]:
            assert torch.allclose(a[name][key], b[name][key], atol=1e-6), (name, key)


def test_finetuning_tensorboard_option_writes_event_files(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import (
        EventAccumulator,
    )

    from aasp_sb.data.demo import make_demo_corpus
    from aasp_sb.recipe_import import import_recipe

    corpus = tmp_path / "corpus"
    make_demo_corpus(str(corpus), num_per_class=3, seconds=(0.4, 0.8),
                     classes=("tone_low", "tone_high"))
    recipe = import_recipe(ROOT / "recipes" / "finetune" / "train.py", "aasp_ft_tb")
    out = tmp_path / "ft"
    recipe.main([
        str(ROOT / "hparams" / "finetune" / "demo.yaml"), f"--data_folder={corpus}",
        f"--output_folder={out}", f"--prep_folder={out}/data", "--number_of_epochs=2",
        "--batch_size=4", "--crop_seconds=0.3", "--warmup_epochs=0", "--embed_dim=32",
        "--depth=1", "--num_heads=2", "--aape_modes=4", "--max_frames=64",
        "--use_tensorboard=True", "--device=cpu",
    ])
    events = EventAccumulator(str(out / "tensorboard"))
    events.Reload()
    tags = set(events.Tags()["scalars"])
    assert {"train/loss", "valid/loss", "valid/accuracy", "epoch/lr"} <= tags, tags
    assert [e.step for e in events.Scalars("valid/accuracy")] == [1, 2]


def test_loader_options_on_cuda_pin_persist_and_prefetch():
    recipe = load_recipe()
    hp = {"batch_size": 4, "num_workers": 2, "prefetch_factor": 3}
    cuda = recipe.loader_options(hp, {"device": "cuda:0"}, shards=False)
    assert cuda["pin_memory"] and cuda["persistent_workers"] and cuda["prefetch_factor"] == 3
    cpu = recipe.loader_options(hp, {"device": "cpu"}, shards=True)
    assert "pin_memory" not in cpu and "persistent_workers" not in cpu and "collate_fn" in cpu
    no_workers = recipe.loader_options({**hp, "num_workers": 0}, {"device": "cuda"}, shards=False)
    assert no_workers["pin_memory"] and "persistent_workers" not in no_workers


def test_rankme_uses_at_most_rankme_clips(audio_folder, tmp_path):
    import json

    out = tmp_path / "run"
    load_recipe().main(recipe_args(audio_folder, out, number_of_epochs=1, rankme_clips=2))
    record = json.loads((out / "epochs.jsonl").read_text().splitlines()[-1])
    assert 1.0 <= record["valid_rankme"] <= 2.0 + 1e-6  # RankMe of 2 rows is at most 2
