"""Fine-tuning: every recipe config end to end, the Brain's metric, freezing, lr scales."""

import csv
import json
import pathlib
from types import SimpleNamespace

import pytest
import speechbrain as sb
import task_fixtures as fx
import torch
import yaml
from speechbrain.dataio.batch import PaddedBatch
from speechbrain.utils.epoch_loop import EpochCounter
from torch.utils.data import DataLoader

from aasp_sb.augment import Mixup
from aasp_sb.brains.finetune import (
    ClassifierHead,
    FinetuneBrain,
    check_finetune_hparams,
    encode_pooled,
)
from aasp_sb.checkpoints import safe_torch_load
from aasp_sb.data.demo import make_demo_corpus
from aasp_sb.data.folder import read_csv, write_csv
from aasp_sb.features import Features
from aasp_sb.lobes.aape import make_stem
from aasp_sb.lobes.encoder import AudioViT
from aasp_sb.pretrained import find_weights
from aasp_sb.recipe_import import import_recipe

ROOT = pathlib.Path(__file__).resolve().parents[1]
HPARAMS = ROOT / "hparams" / "finetune"
CONFIGS = sorted(p.stem for p in HPARAMS.glob("*.yaml"))

TINY_MODEL = {
    "embed_dim": 32,
    "depth": 1,
    "num_heads": 2,
    "aape_modes": 4,
    "max_frames": 64,
}
TINY_TRAINING = {
    "number_of_epochs": 1,
    "batch_size": 4,
    "test_batch_size": 8,
    "crop_seconds": 0.3,
    "num_workers": 0,
    "freq_mask_width": 8,
    "time_mask_width": 10,
    "warmup_epochs": 0,
}


# ------------------------------------------------------------------ helpers
def load_module(relpath, name):
    """Imports a recipe script as a module."""
    return import_recipe(ROOT / relpath, name)


def load_recipe():
    """recipes/finetune/train.py as a module."""
    return load_module("recipes/finetune/train.py", "aasp_finetune_recipe")


def finetune_args(config, data_folder, output_folder, model=True, **overrides):
    """Arguments of a tiny CPU run of ``hparams/finetune/<config>.yaml``."""
    opts = dict(TINY_TRAINING)
    if model:
        opts.update(TINY_MODEL)
    opts.update(overrides)
    args = [
        str(HPARAMS / f"{config}.yaml"),
        f"--data_folder={data_folder}",
        f"--output_folder={output_folder}",
        # the YAML's default (<output_folder>/../<task>_data, shared by the seeds)
        # would be the fixture's own folder here
        f"--prep_folder={output_folder}/data",
    ]
    return (
        args
        + [f"--{k}={v}" for k, v in opts.items()]
        + ["--device=cpu", "--noprogressbar"]
    )


def make_demo(folder):
    make_demo_corpus(
        str(folder),
        num_per_class=3,
        seconds=(0.4, 0.8),
        classes=("am_05hz", "chirp", "click_train"),
    )
    return folder


FIXTURES = {
    "as20k": fx.make_as20k,
    "esc50": fx.make_esc50,
    "us8k": fx.make_us8k,
    "spcv2": fx.make_spcv2,
    "nsynth": fx.make_nsynth,
    "vc1": fx.make_vc1,
    "cremad": fx.make_cremad,
    "gtzan": fx.make_gtzan,
    "demo": make_demo,
}
RUN_FOLDS = {"esc50": ["fold2", "fold4"], "us8k": ["fold1", "fold10"]}


def tiny_encoder(depth=2):
    stem = make_stem(True, n_mels=80, patch_size=16, embed_dim=32, num_modes=4)
    return AudioViT(stem, embed_dim=32, depth=depth, num_heads=2, max_frames=64)


def tiny_brain(
    tmp_path=None, num_classes=3, multilabel=False, head_dim=32, **hp
):
    encoder = tiny_encoder(hp.pop("depth", 2))
    modules = {
        "compute_features": Features(),
        "encoder": encoder,
        "head": ClassifierHead(head_dim, num_classes),
    }
    if hp.get("mixup_alpha"):
        modules["mixup"] = Mixup(hp["mixup_alpha"])
    hparams = {
        "multilabel": multilabel,
        "num_classes": num_classes,
        "classes": [f"c{i}" for i in range(num_classes)],
        "lr": 1e-3,
        "weight_decay": 0.05,
        "layer_decay": 0.75,
        "warmup_epochs": 0,
        "number_of_epochs": 1,
        "epoch_counter": EpochCounter(1),
        "split_folder": str(tmp_path) if tmp_path else None,
    }
    hparams.update(hp)
    return FinetuneBrain(
        modules,
        torch.optim.AdamW,
        hparams,
        run_opts={"noprogressbar": True, "device": "cpu"},
    )


def toy_loader(n=8, num_classes=3, multilabel=False, batch_size=4):
    g = torch.Generator().manual_seed(0)
    data = []
    for i in range(n):
        label = (
            (torch.rand(num_classes, generator=g) > 0.5).float()
            if multilabel
            else torch.tensor([i % num_classes])
        )
        data.append(
            {
                "id": f"u{i}",
                "sig": 0.1 * torch.randn(3200, generator=g),
                "label": label,
            }
        )
    return DataLoader(data, batch_size=batch_size, collate_fn=PaddedBatch)


def read_json(path):
    with open(path, encoding="utf-8") as f:
        return json.load(f)


# ------------------------------------------------- every config, end to end
@pytest.mark.parametrize("config", CONFIGS)
def test_every_config_runs_end_to_end(config, tmp_path):
    assert set(CONFIGS) == set(FIXTURES), (
        "a config without a fixture (or vice versa)"
    )
    data = tmp_path / "data"
    FIXTURES[config](data)
    out = tmp_path / "out"
    extra = {}
    if config in RUN_FOLDS:
        extra["folds"] = ",".join(RUN_FOLDS[config])
    summary = load_recipe().main(finetune_args(config, data, out, **extra))

    folds = RUN_FOLDS.get(config)
    folders = [out / f for f in folds] if folds else [out]
    values = []
    for folder in folders:
        res = read_json(folder / "results.json")
        assert res["metric"] == ("mAP" if config == "as20k" else "accuracy")
        assert res["num_test"] > 0 and not res["debug"]
        assert res["best_epoch"] == 1
        rows = list(
            csv.DictReader(
                open(folder / "test_per_class.csv", encoding="utf-8")
            )
        )
        # the headline number is the per-class file's: clip-weighted
        # accuracy, or the mean AP over classes with positives
        if res["metric"] == "accuracy":
            n = sum(int(r["clips"]) for r in rows)
            hits = sum(float(r["accuracy"] or 0) * int(r["clips"]) for r in rows)
            assert n == res["num_test"]
            assert res["test"] == pytest.approx(hits / n, abs=1e-5)
        else:
            aps = [float(r["AP"]) for r in rows if int(r["positives"]) > 0]
            assert res["test"] == pytest.approx(sum(aps) / len(aps), abs=1e-5)
        assert res["protocol"] == "clean" and res["optimistic"] is False
        classes = (folder.parent if folds else folder) / "data" / "classes.txt"
        if config == "demo":
            classes = data / "classes.txt"
        assert [r["class"] for r in rows] == classes.read_text().split()
        assert (folder / "task.json").is_file()
        values.append(res["test"])
    # the summary averages exactly the splits that ran
    saved = read_json(out / "summary.json")
    assert saved["splits"] == summary["splits"]
    assert list(saved["splits"]) == (folds or list(saved["splits"]))
    assert len(saved["splits"]) == len(folders) == saved["num_splits"]
    assert saved["mean"] == pytest.approx(sum(values) / len(values), abs=1e-12)
    if folds:
        assert sorted(p.name for p in out.glob("fold*")) == sorted(folds)
        assert saved["ci95"] is not None
    assert "mean ± 95% CI" in (out / "summary.md").read_text(encoding="utf-8")


def test_rerun_reuses_finished_splits_and_debug_runs(tmp_path, monkeypatch):
    data = make_demo(tmp_path / "demo")
    recipe = load_recipe()
    out = tmp_path / "out"
    debug = recipe.main(finetune_args("demo", data, out) + ["--debug"])
    assert read_json(out / "results.json")["debug"] is True
    first = recipe.main(
        finetune_args("demo", data, out)
    )  # debug results are not reused
    assert first["results"]["csv"]["debug"] is False
    assert debug["mean"] is not None

    def no_training(*args, **kwargs):
        raise AssertionError("a finished split was trained again")

    monkeypatch.setattr(FinetuneBrain, "fit", no_training)
    again = recipe.main(finetune_args("demo", data, out))
    assert again["mean"] == first["mean"]


# ----------------------------------------------------- pre-trained weights
@pytest.fixture(scope="module")
def pretrained_run(tmp_path_factory):
    """A one-epoch tiny pre-training run on a small demo corpus."""
    from pretrain_utils import load_recipe as load_pretrain_recipe
    from pretrain_utils import recipe_args

    corpus = make_demo(tmp_path_factory.mktemp("corpus"))
    out = tmp_path_factory.mktemp("pretrain") / "run"
    load_pretrain_recipe().main(
        recipe_args(
            corpus,
            out,
            number_of_epochs=1,
            batch_size=2,
            train_csv=corpus / "train.csv",
            valid_csv=corpus / "valid.csv",
        )
    )
    return SimpleNamespace(corpus=corpus, run=out)


def test_pretrained_weights_are_loaded_and_frozen_encoder_kept(
    pretrained_run, tmp_path
):
    import logging

    class Keep(logging.Handler):  # SpeechBrain's logging set-up drops caplog's
        def emit(self, record):
            messages.append(record.getMessage())

    messages, keep = [], Keep(logging.INFO)
    recipe = load_recipe()
    watched = [logging.getLogger(recipe.__name__), logging.getLogger("aasp_sb.brains.finetune")]
    for lg in watched:
        lg.addHandler(keep)
        lg.setLevel(logging.INFO)
    out = tmp_path / "ft"
    try:
        recipe.main(
            finetune_args(
                "demo",
                pretrained_run.corpus,
                out,
                model=False,
                pretrained_path=pretrained_run.run,
                freeze_encoder=True,
            )
        )
    finally:
        for lg in watched:
            lg.removeHandler(keep)
    pre = safe_torch_load(find_weights(pretrained_run.run))
    # the log says what was loaded, from where, and the true trainable count
    loaded = [m for m in messages if m.startswith("Loaded pre-trained student weights")]
    assert loaded and f"all, {len(pre)} tensors) from {find_weights(pretrained_run.run)}" in loaded[0]
    counts = [m for m in messages if "Trainable parameters after freezing" in m]
    assert counts and "encoder 0 of " in counts[0]
    res = read_json(out / "results.json")
    tuned = safe_torch_load(pathlib.Path(res["checkpoint"]) / "encoder.ckpt")
    assert set(pre) == set(tuned)
    for k in pre:
        assert torch.equal(pre[k], tuned[k]), k
    assert res["pretrained_path"] == str(pretrained_run.run)


def test_pretrained_parts_transfer_only_the_chosen_part(pretrained_run, tmp_path):
    """``pretrained_parts: stem`` / ``blocks``: that part from the run, the rest as random init."""
    def frozen_run(name, **keys):
        load_recipe().main(finetune_args(
            "demo", pretrained_run.corpus, tmp_path / name, model=False,
            freeze_encoder=True, **keys,
        ))
        res = read_json(tmp_path / name / "results.json")
        return safe_torch_load(pathlib.Path(res["checkpoint"]) / "encoder.ckpt")

    pre = safe_torch_load(find_weights(pretrained_run.run))
    rnd = frozen_run("random", model_hparams=pretrained_run.run)
    stem = frozen_run("stem", pretrained_path=pretrained_run.run, pretrained_parts="stem")
    blocks = frozen_run("blocks", pretrained_path=pretrained_run.run, pretrained_parts="blocks")
    differ = [k for k in pre if not torch.equal(pre[k], rnd[k])]
    assert any(k.startswith("stem.") for k in differ)
    assert any(k.startswith("blocks.") for k in differ)
    for k in pre:
        in_stem = k.startswith("stem.")
        assert torch.equal(stem[k], pre[k] if in_stem else rnd[k]), k
        assert torch.equal(blocks[k], rnd[k] if in_stem else pre[k]), k
    with pytest.raises(ValueError, match="pretrained_parts"):
        check_finetune_hparams({"pretrained_parts": "head"})


def test_model_keys_contradicting_the_run_are_refused(pretrained_run, tmp_path):
    with pytest.raises(ValueError, match="contradict the pre-trained model"):
        load_recipe().main(
            finetune_args(
                "demo",
                pretrained_run.corpus,
                tmp_path / "x",
                model=False,
                pretrained_path=pretrained_run.run,
                embed_dim=48,
            )
        )


def run_compare_init(run, corpus, output_folder, *args):
    """``compare_init.py`` with the tiny training settings; returns its result."""
    compare = load_module(
        "recipes/finetune/compare_init.py", "aasp_compare_init"
    )
    extra = [f"--{k}={v}" for k, v in TINY_TRAINING.items()]
    return compare.main(
        [
            f"--pretrained_path={run}",
            f"--corpus={corpus}",
            f"--output_folder={output_folder}",
            "--device=cpu",
            "--noprogressbar",
            *extra,
            *args,
        ]
    )


def test_compare_init_runs_both_inits_with_the_same_architecture(
    pretrained_run, tmp_path
):
    out = run_compare_init(pretrained_run.run, pretrained_run.corpus, tmp_path)
    record = read_json(tmp_path / "compare.json")
    assert record["pretrained"] == out["pretrained"]["mean"]
    assert record["random"] == out["random"]["mean"]
    pre = read_json(tmp_path / "pretrained" / "results.json")
    rnd = read_json(tmp_path / "random" / "results.json")
    a = safe_torch_load(pathlib.Path(pre["checkpoint"]) / "encoder.ckpt")
    b = safe_torch_load(pathlib.Path(rnd["checkpoint"]) / "encoder.ckpt")
    assert {k: v.shape for k, v in a.items()} == {
        k: v.shape for k, v in b.items()
    }
    assert rnd["pretrained_path"] is None


def test_compare_init_few_labels_trains_both_on_n_clips_per_class(
    pretrained_run, tmp_path
):
    corpus = tmp_path / "full"  # the fixture's corpus with two clips per class
    corpus.mkdir()
    rows = read_csv(pretrained_run.corpus / "train.csv")
    second = [{**r, "ID": r["ID"] + "_b"} for r in rows]
    write_csv(corpus / "train.csv", rows + second, list(rows[0]))
    for name in ("valid.csv", "test.csv"):
        (corpus / name).write_bytes((pretrained_run.corpus / name).read_bytes())
    out = tmp_path / "out"
    run_compare_init(pretrained_run.run, corpus, out, "--labels_per_class=1")
    few = read_csv(out / "corpus" / "train.csv")
    assert few == rows  # the first clip of each class, in manifest order
    for name in ("valid.csv", "test.csv"):
        assert read_csv(out / "corpus" / name) == read_csv(corpus / name)
    tmp_path = out
    assert read_json(tmp_path / "compare.json")["labels_per_class"] == 1
    for arm in ("pretrained", "random"):  # both arms trained on the reduced set
        hp = (tmp_path / arm / "hyperparams.yaml").read_text(encoding="utf-8")
        assert f"data_folder: {tmp_path / 'corpus'} " in " ".join(hp.split())


def test_few_label_corpus_refuses_more_clips_than_a_class_has(
    pretrained_run, tmp_path
):
    compare = load_module(
        "recipes/finetune/compare_init.py", "aasp_compare_init"
    )
    with pytest.raises(ValueError, match="fewer than 1000 rows for class"):
        compare.few_label_corpus(pretrained_run.corpus, tmp_path, 1000)


def test_check_same_model_catches_an_option_the_yaml_does_not_mirror():
    from aasp_sb.brains.finetune import check_same_model
    from aasp_sb.pretrained import PretrainedParts

    def encoder(**aape):
        stem = make_stem(True, 80, 16, 32, num_modes=4, **aape)
        return AudioViT(stem, 32, depth=1, num_heads=2, max_frames=64)

    ref = PretrainedParts(Features(), encoder(alpha_min=0.02), {}, None)
    with torch.no_grad():  # the alias branch open, whatever the default gate_init
        ref.encoder.stem.gate.fill_(1.0)
    same = encoder(alpha_min=0.02)
    own = {k: v.clone() for k, v in same.state_dict().items()}
    check_same_model(ref, Features(), same)
    assert all(torch.equal(v, own[k]) for k, v in same.state_dict().items())
    with pytest.raises(ValueError, match="not mirrored"):
        check_same_model(ref, Features(), encoder(alpha_min=0.05))
    with pytest.raises(ValueError, match="front end"):
        check_same_model(ref, _features(mean=0.0), same)


def _features(mean):
    from aasp_sb.features import Normalize

    return Features(normalize=Normalize(mean=mean, std=4.2))


# ----------------------------------------------------------- metric path
def test_map_through_the_brain_metric_path_matches_hand_computation(tmp_path):
    brain = tiny_brain(tmp_path, num_classes=2, multilabel=True)
    brain.on_stage_start(sb.Stage.TEST)
    scores = torch.tensor(
        [[0.9, 0.1], [0.8, 0.7], [0.7, 0.2], [0.6, 0.3]]
    ).logit()
    targets = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0], [0.0, 0.0]])
    for rows in (slice(0, 2), slice(2, 4)):
        batch = SimpleNamespace(id=["a", "b"])
        brain.compute_objectives(
            {"logits": scores[rows], "targets": targets[rows]},
            batch,
            sb.Stage.TEST,
        )
    # class 0: positives ranked 1st and 3rd -> (1 + 2/3) / 2; class 1: ranked 1st -> 1
    expected = (5 / 6 + 1.0) / 2
    assert brain.compute_metrics() == pytest.approx(expected)
    brain.on_stage_end(sb.Stage.TEST, 0.5)
    res = read_json(tmp_path / "results.json")
    assert res["metric"] == "mAP" and res["test"] == pytest.approx(expected)
    rows = list(
        csv.DictReader(open(tmp_path / "test_per_class.csv", encoding="utf-8"))
    )
    assert [float(r["AP"]) for r in rows] == pytest.approx(
        [5 / 6, 1.0], abs=1e-6
    )
    assert [int(r["positives"]) for r in rows] == [2, 1]


def test_accuracy_metric_skips_unreadable_clips():
    brain = tiny_brain(num_classes=3)
    brain.on_stage_start(sb.Stage.VALID)
    logits = torch.tensor([[3.0, 0, 0], [0, 3.0, 0], [0, 0, 3.0]])
    batch = SimpleNamespace(
        id=["a", "b", "c"], valid=torch.tensor([True, True, False])
    )
    brain.compute_objectives(
        {"logits": logits, "targets": torch.tensor([0, 2, 1])},
        batch,
        sb.Stage.VALID,
    )
    assert brain.compute_metrics() == pytest.approx(0.5)
    assert brain._skipped_eval == 1


# ----------------------------------------------------------------- mixup
def test_brain_mixes_inputs_and_labels_with_the_same_lambda():
    brain = tiny_brain(num_classes=4, multilabel=True, mixup_alpha=0.5)
    seen = {}
    features = brain.modules.compute_features

    class Recorder(torch.nn.Module):
        def forward(self, wavs):
            seen["wavs"] = wavs.clone()
            return features(wavs)

    brain.modules["compute_features"] = Recorder()
    brain.modules.train()
    wavs = torch.randn(6, 3200)
    labels = torch.eye(4)[[0, 1, 2, 3, 0, 1]]
    batch = PaddedBatch(
        [{"id": str(i), "sig": wavs[i], "label": labels[i]} for i in range(6)]
    )
    out = brain.compute_forward(batch, sb.Stage.TRAIN)
    lam, perm = out["lam"], out["perm"]
    assert not torch.allclose(lam, torch.ones_like(lam))
    assert torch.allclose(
        out["targets"],
        lam[:, None] * labels + (1 - lam[:, None]) * labels[perm],
    )
    assert torch.allclose(
        seen["wavs"],
        lam[:, None] * wavs + (1 - lam[:, None]) * wavs[perm],
        atol=1e-6,
    )


def test_single_label_mixup_uses_soft_cross_entropy():
    brain = tiny_brain(num_classes=3, mixup_alpha=0.4)
    brain.modules.train()
    batch = next(iter(toy_loader(6, 3, batch_size=6)))
    out = brain.compute_forward(batch, sb.Stage.TRAIN)
    assert out["targets"].shape == (6, 3)
    loss = brain.compute_objectives(out, batch, sb.Stage.TRAIN)
    logp = out["logits"].float().log_softmax(-1)
    assert loss.item() == pytest.approx(
        -(out["targets"] * logp).sum(-1).mean().item(), rel=1e-5
    )


# --------------------------------------------------------------- freezing
def test_frozen_stem_gets_no_gradient_and_no_optimiser_slot():
    brain = tiny_brain(freeze_stem=True)
    stem = brain.modules.encoder.stem
    before = {k: v.clone() for k, v in stem.state_dict().items()}
    modes = []
    original = brain.compute_forward

    def recording_forward(batch, stage):
        modes.append(stem.training)
        return original(batch, stage)

    brain.compute_forward = recording_forward
    brain.fit(brain.hparams.epoch_counter, toy_loader())
    assert brain.optimizer_step == 2
    stem_ids = {id(p) for p in stem.parameters()}
    in_opt = {id(p) for g in brain.optimizer.param_groups for p in g["params"]}
    assert not stem_ids & in_opt
    assert all(
        p.grad is None and not p.requires_grad for p in stem.parameters()
    )
    assert modes and not any(
        modes
    )  # the stem stayed in eval mode while training
    for k, v in stem.state_dict().items():
        assert torch.equal(v, before[k]), k
    # the rest did train
    assert in_opt >= {id(p) for p in brain.modules.encoder.blocks.parameters()}


def test_frozen_encoder_trains_only_the_head():
    brain = tiny_brain(freeze_encoder=True)
    before = {
        k: v.clone() for k, v in brain.modules.encoder.state_dict().items()
    }
    head_before = brain.modules.head.linear.weight.clone()
    brain.fit(brain.hparams.epoch_counter, toy_loader())
    in_opt = {id(p) for g in brain.optimizer.param_groups for p in g["params"]}
    assert in_opt == {id(p) for p in brain.modules.head.parameters()}
    for k, v in brain.modules.encoder.state_dict().items():
        assert torch.equal(v, before[k]), k
    assert not torch.equal(brain.modules.head.linear.weight, head_before)


# --------------------------------------------------------- layer-wise lr
def test_layer_wise_lr_scales_reach_the_optimiser_groups():
    decay, depth, lr = 0.5, 2, 1e-3
    brain = tiny_brain(
        layer_decay=decay,
        depth=depth,
        lr=lr,
        warmup_epochs=1,
        number_of_epochs=2,
        epoch_counter=EpochCounter(2),
    )
    loader = toy_loader(8)  # 2 steps per epoch: 2 warm-up steps, 4 in all
    brain.steps_per_epoch = 2
    brain.on_fit_start()
    sched = brain.lr_scheduler
    batch = next(iter(loader))
    brain.modules.train()
    for _ in range(3):
        brain.fit_batch(batch)
    assert sched.n_steps == 3 and brain.optimizer_step == 3
    factor = sched.factor(3)
    assert 0 < factor < 1
    names = {}
    for g in brain.optimizer.param_groups:
        layer = int(g["group_name"].split("_")[0][len("layer") :])
        expected_scale = decay ** (depth + 1 - layer)
        assert g["lr_scale"] == pytest.approx(expected_scale)
        assert g["lr"] == pytest.approx(lr * expected_scale * factor)
        names[layer] = g["lr"]
    assert sorted(names) == list(range(depth + 2))  # stem, blocks, norm + head
    assert names[0] == pytest.approx(names[depth + 1] * decay ** (depth + 1))
    # the head's group holds the head and is at the peak scale
    head_group = [
        g
        for g in brain.optimizer.param_groups
        if any(p is brain.modules.head.linear.weight for p in g["params"])
    ][0]
    assert head_group["lr_scale"] == 1.0


def test_gradient_clipping_covers_every_group():
    brain = tiny_brain()
    brain.max_grad_norm = 1e-6
    brain.steps_per_epoch = 1
    brain.on_fit_start()
    for g in brain.optimizer.param_groups:
        for p in g["params"]:
            p.grad = torch.ones_like(p)
    captured = {}

    def spy(opt, args, kwargs):
        grads = [
            p.grad
            for g in opt.param_groups
            for p in g["params"]
            if p.grad is not None
        ]
        captured["norm"] = torch.cat([x.flatten() for x in grads]).norm().item()
        captured["count"] = len(grads)

    brain.optimizer.register_step_pre_hook(spy)
    brain.optimizers_step()
    assert len(brain.optimizer.param_groups) > 2
    assert captured["count"] == sum(
        len(g["params"]) for g in brain.optimizer.param_groups
    )
    assert captured["norm"] == pytest.approx(1e-6, rel=1e-3)


# --------------------------------------------------------------- pooling
def test_token_drop_pools_only_real_tokens_of_kept_chunks():
    enc = tiny_encoder(1).eval()
    x = torch.randn(2, 150, 80)
    lengths = torch.tensor([1.0, 0.3])
    torch.manual_seed(0)
    a = encode_pooled(enc, x, lengths, token_drop=0.5)
    # what lies beyond clip 2's length cannot matter
    y = x.clone()
    y[1, 50:] = 100.0
    torch.manual_seed(0)
    b = encode_pooled(enc, y, lengths, token_drop=0.5)
    assert torch.allclose(a[1], b[1], atol=1e-5)
    assert torch.isfinite(a).all()
    with pytest.raises(ValueError, match="pooling='tokens'"):
        encode_pooled(enc, x, lengths, pooling="frames", token_drop=0.5)


@pytest.mark.parametrize(
    "options",
    [{"pooling": "frames", "head_dim": 160}, {"token_drop": 0.5}],
    ids=["frame-pooling", "token-drop"],
)
def test_brain_trains_with_frame_pooling_and_token_drop(options):
    brain = tiny_brain(**options)
    brain.fit(brain.hparams.epoch_counter, toy_loader(), toy_loader(4))
    assert brain.optimizer_step == 2
    logits, targets = torch.cat(brain._eval_logits), torch.cat(brain._eval_targets)
    assert len(targets) == 4
    hand = (logits.argmax(-1) == targets).float().mean().item()
    assert brain.compute_metrics() == pytest.approx(hand)


def test_hparams_checks_name_the_key():
    with pytest.raises(ValueError, match="token_drop"):
        check_finetune_hparams({"token_drop": 1.0})
    with pytest.raises(ValueError, match="pooling"):
        check_finetune_hparams({"pooling": "max"})
    with pytest.raises(ValueError, match="rrc"):
        check_finetune_hparams({"rrc": True, "modules": {"encoder": None}})


#: M2D's published fine-tuning commands, verbatim (nttcslab/m2d util/ft-*.sh;
#: EVAR's finetune.py defaults: SGD momentum 0.9, 200 epochs, batch 128).
M2D_COMMANDS = {
    "esc50": "python finetune.py config/m2d.yaml esc50 weight_file=$weight,"
    "encoder_only=True,dur_frames=501,freeze_embed=True --lr=0.5 --freq_mask 15 "
    "--time_mask 48 --training_mask 0.5 --mixup 0.0 --rrc True --seed $seed",
    "as20k": "python finetune.py config/m2d.yaml as20k weight_file=$weight,"
    "encoder_only=True,dur_frames=1001 --lr=0.5 --freq_mask 30 --time_mask 192 "
    "--training_mask 0.5 --mixup 0.3 --rrc True --batch_size 64 --seed $seed",
    "spcv2": "python finetune.py config/m2d.yaml spcv2 weight_file=$weight,"
    "encoder_only=True --lr=0.5 --freq_mask 30 --time_mask 48 --training_mask 0.5 "
    "--mixup 0.3 --rrc True --seed $seed",
    "vc1": "python finetune.py config/m2d.yaml vc1 weight_file=$weight,"
    "encoder_only=True,dur_frames=821 --optim adamw --lr=0.0005 --freq_mask 30 "
    "--time_mask 48 --training_mask 0.0 --mixup 0.0 --rrc False --epochs 50 "
    "--batch_size 64 --seed $seed",
}


def parse_m2d_command(cmd):
    """``--key value`` / ``--key=value`` flags and the ``k=v`` options of a command."""
    words = cmd.split()
    flags, i = {}, 0
    while i < len(words):
        w = words[i]
        if w.startswith("--"):
            if "=" in w:
                k, v = w[2:].split("=", 1)
            else:
                k, v, i = w[2:], words[i + 1], i + 1
            flags[k] = yaml.safe_load(v)
        i += 1
    options = dict(o.split("=", 1) for o in words[4].split(","))
    return flags, options


def test_m2d_tagged_configs_follow_the_published_commands():
    """Our [M2D] values derived from M2D's util/ft-*.sh commands (EVAR finetune.py)."""
    from aasp_sb.data.tasks import get_task

    for name, cmd in M2D_COMMANDS.items():
        flags, options = parse_m2d_command(cmd)
        text = (HPARAMS / f"{name}.yaml").read_text()
        plain = yaml.safe_load("\n".join(  # top-level plain keys only
            line for line in text.splitlines()
            if line[:1].isalpha() and "!" not in line.split("#")[0]
        ))
        info = get_task(name).info
        optim = flags.get("optim", "sgd")  # EVAR finetune.py default
        # EVAR's loss_nll averages over the C classes (-mean(y log p)), ours
        # sums them: SGD's lr is divided by C; Adam(W) is invariant to the
        # loss scale, and BCE averages over the classes in both.
        scale = info.num_classes if optim == "sgd" and not info.multilabel else 1
        assert plain["lr"] == pytest.approx(flags["lr"] / scale, rel=1e-5), name
        assert plain["freq_mask_width"] == flags["freq_mask"], name
        assert plain["time_mask_width"] == flags["time_mask"], name
        assert plain["token_drop"] == flags["training_mask"], name
        assert plain["token_drop_mode"] == "structured", name
        assert plain["mixup_alpha"] == flags["mixup"], name
        assert plain["rrc"] == flags["rrc"], name
        assert plain["batch_size"] == flags.get("batch_size", 128), name
        assert plain["number_of_epochs"] == flags.get("epochs", 200), name
        assert plain["freeze_stem"] == (options.get("freeze_embed") == "True"), name
        assert plain["optimizer"] == optim, name
        if "dur_frames" in options:  # 100 frames/s, centred STFT: +1 frame
            frames = round(plain["crop_seconds"] * 100) + 1
            assert frames == int(options["dur_frames"]), name
        assert plain["layer_decay"] is None and plain["warmup_epochs"] == 5
        assert "opt_class: !apply:aasp_sb.optimizers.optimizer_class" in text, name
        if optim == "adamw":  # EVAR finetune.py: AdamW (0.9, 0.95), amsgrad
            assert plain["amsgrad"] is True and plain["betas"] == [0.9, 0.95]
            assert plain["weight_decay"] == 0.0001
        else:  # SGD, momentum 0.9, no weight decay
            assert plain["momentum"] == 0.9 and plain["weight_decay"] == 0.0
