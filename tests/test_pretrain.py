import json

import numpy as np
import pytest
import torch
from pretrain_utils import load_recipe, recipe_args

from aasp_sb.brains.pretrain import AaSPBrain, check_pretrain_hparams
from aasp_sb.data.demo import make_unlabeled_folder
from aasp_sb.pretrained import load_pretrained


@pytest.fixture(scope="module")
def audio_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("audio")
    make_unlabeled_folder(str(folder), n=20, seconds=(0.3, 2.5), seed=3)
    return folder


def read_jsonl(path):
    return [json.loads(line) for line in open(path, encoding="utf-8")]


def effective_rank(embeddings):
    """RankMe written out again with numpy (a check on ``metrics.rankme``)."""
    sigma = np.linalg.svd(np.asarray(embeddings, dtype=np.float64), compute_uv=False)
    p = sigma / sigma.sum() + 1e-7
    return float(np.exp(-(p * np.log(p)).sum()))


def test_recipe_runs_on_mixed_audio_and_writes_loadable_checkpoint(
    audio_folder, tmp_path, monkeypatch
):
    import aasp_sb.brains.pretrain as pretrain_module
    from aasp_sb.evaluation.metrics import rankme

    seen = []

    def spy(embeddings, *args, **kwargs):
        seen.append(embeddings.detach().clone())
        return rankme(embeddings, *args, **kwargs)

    monkeypatch.setattr(pretrain_module, "rankme", spy)
    recipe = load_recipe()
    out = tmp_path / "run"
    brain = recipe.main(recipe_args(audio_folder, out, number_of_epochs=1))
    assert brain.optimizer_step > 0
    parts = load_pretrained(out)
    assert torch.equal(
        parts.encoder.state_dict()["blocks.0.mlp.fc1.weight"],
        brain.hparams.encoder.state_dict()["blocks.0.mlp.fc1.weight"].cpu(),
    )
    epochs = read_jsonl(out / "epochs.jsonl")
    # RankMe is computed on every validation clip's embedding (not one batch) and
    # logged as is; collapsed embeddings (all rows on one direction) would give 1.0
    num_valid = len((out / "data" / "valid.csv").read_text().strip().splitlines()) - 1
    assert len(seen) == 1 and seen[0].shape == (num_valid, 32) and num_valid >= 4
    logged = epochs[-1]["valid_rankme"]
    assert logged == pytest.approx(effective_rank(seen[0]), abs=1e-3)
    collapsed = seen[0].mean(0, keepdim=True) * torch.rand(num_valid, 1)
    assert effective_rank(collapsed) == pytest.approx(1.0, abs=1e-3)
    assert logged > 1.5, logged  # measured 2.6 (of at most 4 for 4 clips)


def test_keep_checkpoints_keeps_every_epoch_asked_for(audio_folder, tmp_path):
    """``keep_checkpoints: 3`` over 3 epochs keeps the three end-of-epoch checkpoints."""
    recipe = load_recipe()
    out = tmp_path / "run"
    recipe.main(recipe_args(audio_folder, out, number_of_epochs=3, keep_checkpoints=3))
    ckpts = sorted((out / "save").glob("CKPT+*"))
    assert len(ckpts) == 3
    counters = sorted(int((c / "counter.ckpt").read_text()) for c in ckpts)
    assert counters == [1, 2, 3]


def test_fit_lowers_the_regression_loss(audio_folder, tmp_path, monkeypatch):
    """Also: targets come from the teacher module's forward (what --compile
    compiles), and with contrastive_weight 0 the head is neither run nor trained."""
    from aasp_sb.lobes.teacher import MaskedTeacher
    from aasp_sb.losses import ContrastiveHead

    calls = {"teacher": 0, "head": 0}
    teacher_forward, head_forward = MaskedTeacher.forward, ContrastiveHead.forward

    def counted(name, fn):
        def wrapper(self, *args, **kwargs):
            calls[name] += 1
            return fn(self, *args, **kwargs)
        return wrapper

    monkeypatch.setattr(MaskedTeacher, "forward", counted("teacher", teacher_forward))
    monkeypatch.setattr(ContrastiveHead, "forward", counted("head", head_forward))
    recipe = load_recipe()
    out = tmp_path / "run"
    # lr 2.5e-3 (base_lr 0.16 at batch 4), 80 steps: long enough to learn content
    brain = recipe.main(
        recipe_args(audio_folder, out, number_of_epochs=20, base_lr=0.16,
                    contrastive_weight=0.0)
    )
    steps = read_jsonl(out / "metrics.jsonl")
    first = sum(s["regression"] for s in steps[:4]) / 4
    last = sum(s["regression"] for s in steps[-4:]) / 4
    assert last < first * 0.8, (first, last)
    # A falling loss also fits collapse (constant targets, predicted from
    # anything) and a student that predicts from the positions alone. The
    # trained student must beat (a) the best constant predictor of the same
    # targets (their mean direction: loss 0 when the targets collapse) and
    # (b) itself given another clip's content with the same masks.
    own, const, other = regression_references(brain)
    assert own < 0.85 * const, (own, const)  # measured 0.43 vs 0.67 (seeds 1-3: 0.56-0.64x)
    assert own < 0.9 * other, (own, other)  # measured 0.43 vs 0.72 (seeds 1-3: 0.68-0.82x)
    assert calls["teacher"] >= brain.optimizer_step > 0
    assert calls["head"] == 0
    head = brain.hparams.contrastive_head
    assert not any(p.requires_grad for p in head.parameters())
    in_optimizer = {id(p) for g in brain.optimizer.param_groups for p in g["params"]}
    assert not in_optimizer & {id(p) for p in head.parameters()}


def regression_references(brain):
    """Regression loss of the trained student and of two references, over the training clips.

    Validation-stage masks (fixed). Returns the student's loss, the loss of the
    best constant prediction of the same targets (their normalised mean
    direction) and the student's loss when each clip's masks are filled from
    the next clip's features (the positions are kept, the content is not).
    """
    import speechbrain as sb
    import torch.nn.functional as F

    from aasp_sb.lobes.teacher import unwrap_module
    from aasp_sb.losses import regression_loss

    brain.modules.eval()
    sums = torch.zeros(3)
    with torch.no_grad():
        for batch in brain.train_loader:
            feats = brain.input_features(batch.to(brain.device))
            num_tokens, _ = unwrap_module(brain.modules.student).num_tokens(feats.shape[1])
            visible, masked = brain.draw_masks(feats.shape[0], num_tokens, sb.Stage.VALID)
            targets = brain.teacher_targets(feats, masked).float()
            own = brain.modules.student(feats, visible, masked).pred.float()
            other = brain.modules.student(feats.roll(1, 0), visible, masked).pred.float()
            mean = F.normalize(F.normalize(targets, dim=-1).mean(dim=(0, 1)), dim=0)
            sums += torch.stack([
                regression_loss(own, targets),
                regression_loss(mean.expand_as(targets), targets),
                regression_loss(other, targets),
            ])
    return (sums / len(brain.train_loader)).tolist()


class Interrupt(Exception):
    pass


def test_interrupted_run_resumes_to_the_same_state(audio_folder, tmp_path, monkeypatch):
    recipe = load_recipe()
    common = dict(number_of_epochs=2, ckpt_interval_steps=2)
    ref = recipe.main(recipe_args(audio_folder, tmp_path / "ref", **common))

    original = AaSPBrain.fit_batch
    calls = {"n": 0}

    def crashing_fit_batch(self, batch):
        calls["n"] += 1
        if calls["n"] == 5:  # after the intra-epoch checkpoint at step 4 (epoch 2)
            raise Interrupt()
        return original(self, batch)

    monkeypatch.setattr(AaSPBrain, "fit_batch", crashing_fit_batch)
    out = tmp_path / "resumed"
    with pytest.raises(Interrupt):
        recipe.main(recipe_args(audio_folder, out, **common))
    monkeypatch.setattr(AaSPBrain, "fit_batch", original)
    resumed = recipe.main(recipe_args(audio_folder, out, **common))

    assert resumed.optimizer_step == ref.optimizer_step
    for name in ("teacher", "encoder", "predictor"):
        a = getattr(ref.hparams, name).state_dict()
        b = getattr(resumed.hparams, name).state_dict()
        for key in a:
            assert torch.allclose(a[key], b[key], atol=1e-6), (name, key)
    sa = ref.optimizer.state_dict()["state"]
    sb_ = resumed.optimizer.state_dict()["state"]
    for idx in sa:
        assert torch.allclose(sa[idx]["exp_avg"], sb_[idx]["exp_avg"], atol=1e-6)
    assert resumed.lr_scheduler.current_lr == pytest.approx(ref.lr_scheduler.current_lr)


@pytest.mark.parametrize(
    "key,value,match",
    [
        ("mask_ratio", 1.0, "mask_ratio"),
        ("teacher_input", "half", "teacher_input"),
        ("num_masks", 0, "num_masks"),
    ],
)
def test_bad_configuration_fails_before_training(key, value, match):
    hp = {"mask_ratio": 0.7, "num_masks": 4, "teacher_input": "masked"}
    hp[key] = value
    with pytest.raises(ValueError, match=match):
        check_pretrain_hparams(hp)


def test_speechbrain_compile_reaches_the_teacher(audio_folder, tmp_path):
    """``--compile`` (SpeechBrain's run option) compiles the teacher's target pass.

    Only the teacher is compiled here (``--compile_module_keys``): the
    student's forward + backward graphs take minutes to build on 2 CPU cores.
    """
    import torch._dynamo

    torch._dynamo.reset()
    torch._dynamo.utils.counters.clear()
    recipe = load_recipe()
    out = tmp_path / "run"
    args = recipe_args(audio_folder, out, number_of_epochs=1)
    brain = recipe.main(args + ["--compile", "--compile_module_keys=teacher"])
    assert hasattr(brain.modules.teacher, "_orig_mod")  # wrapped by torch.compile
    assert not hasattr(brain.modules.student, "_orig_mod")
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] >= 1
    assert brain.optimizer_step > 0
    # the compiled teacher follows the EMA and gives the eager result
    feats = torch.randn(2, 64, 80)
    from aasp_sb.masking import multi_mask

    _, masked = multi_mask(2, 20, 2, 0.7, generator=torch.Generator().manual_seed(0))
    eager = brain.modules.teacher._orig_mod(feats, masked)
    torch.testing.assert_close(brain.modules.teacher(feats, masked), eager)
    torch._dynamo.reset()


def test_bf16_autocast_pretraining_on_cpu(audio_folder, tmp_path):
    """The bf16 autocast path (the CUDA default) trains: finite losses, no skipped step."""
    import math

    recipe = load_recipe()
    out = tmp_path / "run"
    brain = recipe.main(recipe_args(audio_folder, out, number_of_epochs=1) + ["--precision=bf16"])
    assert brain.precision == "bf16" and brain.optimizer_step > 0
    assert brain.training_ctx.context.fast_dtype == torch.bfloat16  # autocast really on
    assert brain.skipped_steps == 0
    steps = read_jsonl(out / "metrics.jsonl")
    assert steps and all(math.isfinite(s["loss"]) for s in steps)
    # parameters stay fp32 (autocast casts per op, the master weights do not change dtype)
    assert all(p.dtype == torch.float32 for p in brain.modules.student.parameters())


def test_teacher_built_with_other_keys_is_refused():
    from aasp_sb.lobes.aape import make_stem
    from aasp_sb.lobes.encoder import AudioViT
    from aasp_sb.lobes.teacher import MaskedTeacher

    enc = AudioViT(make_stem(False, embed_dim=32), 32, 2, 4, max_frames=64)
    hp = {"teacher_input": "full", "target_layers": 1, "teacher": MaskedTeacher(enc)}
    with pytest.raises(ValueError, match="teacher_input='full'.*teacher_input='masked'"):
        check_pretrain_hparams(hp)


def test_pretraining_from_logmel_shards(audio_folder, tmp_path):
    from aasp_sb.data.shards import run as build_shards

    shards = build_shards(["--audio-folder", str(audio_folder), "--output", str(tmp_path / "shards")])
    out = tmp_path / "run"
    brain = load_recipe().main(
        recipe_args(audio_folder, out, number_of_epochs=1, shard_folder=shards)
    )
    assert brain.optimizer_step == len(brain.train_loader) > 0
    assert load_pretrained(out).encoder is not None


@pytest.mark.parametrize("contrastive_weight", [0.1, 0.0])
def test_torchrun_two_processes_on_cpu(audio_folder, tmp_path, contrastive_weight):
    """DDP path (gloo on CPU): the student is wrapped, the teacher follows, rank 0 saves.

    With ``contrastive_weight: 0`` the unused head must not stall DDP's
    gradient reduction (it is frozen and not run); both ranks exit cleanly.
    """
    import os
    import shutil
    import subprocess
    import sys

    from pretrain_utils import ROOT, free_port

    torchrun = shutil.which("torchrun", path=os.path.dirname(sys.executable))
    out = tmp_path / "ddp"
    cmd = [torchrun, "--nproc_per_node=2", f"--master_port={free_port()}",
           str(ROOT / "recipes" / "pretrain" / "train.py")]
    cmd += recipe_args(
        audio_folder, out, number_of_epochs=2, batch_size=2,
        contrastive_weight=contrastive_weight,
    )
    cmd += ["--distributed_backend=gloo"]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    steps = read_jsonl(out / "metrics.jsonl")
    assert steps and steps[-1]["step"] == len(steps)  # one writer (rank 0)
    epochs = read_jsonl(out / "epochs.jsonl")
    # RankMe covers all 4 validation clips: the RankMe of a rank's share of
    # them (or of one 2-clip batch) is at most 2; measured on all 4: 2.63-2.67
    num_valid = len((out / "data" / "valid.csv").read_text().strip().splitlines()) - 1
    assert num_valid == 4
    assert len(epochs) == 2 and epochs[-1]["valid_rankme"] > 2.0, epochs[-1]
    assert load_pretrained(out).encoder is not None
