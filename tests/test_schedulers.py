import math

import pytest
import torch
from speechbrain.utils.checkpoints import Checkpointer
from torch import nn

from aasp_sb.lobes.teacher import EMATeacher
from aasp_sb.schedulers import (
    WarmupCosine,
    clip_grad_norm_all,
    default_layer_id,
    param_groups,
)


class ToyViT(nn.Module):
    def __init__(self, depth=3, dim=8):
        super().__init__()
        self.patch_embed = nn.Conv2d(1, dim, 2, 2)
        self.pos_embed = nn.Parameter(torch.zeros(1, 4, dim))
        self.gate = nn.Parameter(torch.zeros(3, dim))
        self.blocks = nn.ModuleList(
            nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, dim))
            for _ in range(depth)
        )
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, 2)
        self.teacher = EMATeacher(nn.Linear(dim, dim))


def _names(model, group):
    ids = {id(p) for p in group["params"]}
    return {n for n, p in model.named_parameters() if id(p) in ids}


def test_param_groups_decay_split_and_frozen_excluded():
    model = ToyViT()
    groups = param_groups(model, weight_decay=0.05, lr=1e-3)
    assert [g["group_name"] for g in groups] == ["decay", "no_decay"]
    decay, no_decay = (_names(model, g) for g in groups)
    assert decay == {"patch_embed.weight", "head.weight"} | {
        f"blocks.{i}.1.weight" for i in range(3)
    }
    assert "pos_embed" in no_decay and "gate" in no_decay
    assert "norm.weight" in no_decay and "head.bias" in no_decay
    assert "blocks.0.0.weight" in no_decay  # LayerNorm scale
    assert not any(n.startswith("teacher") for n in decay | no_decay)
    assert (
        groups[0]["weight_decay"] == 0.05 and groups[1]["weight_decay"] == 0.0
    )
    assert all(g["lr"] == 1e-3 and "lr_scale" not in g for g in groups)
    n_trainable = sum(p.requires_grad for p in model.parameters())
    assert sum(len(g["params"]) for g in groups) == n_trainable
    torch.optim.AdamW(groups)  # accepted by torch


def test_default_layer_ids():
    L = 12
    assert default_layer_id("encoder.blocks.0.attn.q.weight", L) == 1
    assert default_layer_id("blocks.11.mlp.fc1.bias", L) == 12
    assert default_layer_id("encoder.patch_embed.proj.weight", L) == 0
    assert default_layer_id("encoder.stem.aape.lambda_encoder.w", L) == 0
    assert default_layer_id("encoder.pos_embed", L) == 0
    assert default_layer_id("encoder.norm.weight", L) == 13
    assert default_layer_id("head.fc.weight", L) == 13
    assert default_layer_id("encoder.post_norm.weight", L) == 13


def test_param_groups_layer_decay():
    model = ToyViT(depth=3)
    groups = param_groups(model, 0.05, layer_decay=0.5)  # num_layers inferred
    by_name = {}
    for g in groups:
        for n in _names(model, g):
            by_name[n] = g["lr_scale"]
    assert by_name["patch_embed.weight"] == 0.5**4
    assert by_name["pos_embed"] == 0.5**4
    assert by_name["blocks.0.1.weight"] == 0.5**3
    assert by_name["blocks.2.1.bias"] == 0.5**1
    assert by_name["head.weight"] == 1.0 and by_name["norm.bias"] == 1.0
    names = [g["group_name"] for g in groups]
    assert len(names) == len(set(names))
    assert "layer1_decay" in names and "layer1_no_decay" in names
    explicit = param_groups(model, 0.05, layer_decay=0.5, num_layers=3)
    assert [g["lr_scale"] for g in explicit] == [g["lr_scale"] for g in groups]
    custom = param_groups(
        model, 0.05, layer_decay=0.5, num_layers=3, layer_id_fn=lambda n, L: 2
    )
    assert {g["lr_scale"] for g in custom} == {0.25}


def test_param_groups_layer_decay_needs_num_layers():
    with pytest.raises(ValueError, match="num_layers"):
        param_groups(nn.Linear(2, 2), 0.05, layer_decay=0.7)


def _opt(lrs=(1.0,), scales=(None,)):
    groups = []
    for lr, scale in zip(lrs, scales):
        g = {"params": [nn.Parameter(torch.zeros(2))], "lr": lr}
        if scale is not None:
            g["lr_scale"] = scale
        groups.append(g)
    return torch.optim.SGD(groups, lr=1.0)


def test_warmup_linear_ramp():
    opt = _opt((0.4,))
    sched = WarmupCosine(opt, warmup_steps=4, total_steps=20)
    lrs = []
    for _ in range(4):
        lrs.append(opt.param_groups[0]["lr"])
        sched.step()
    assert lrs == pytest.approx([0.1, 0.2, 0.3, 0.4])
    assert opt.param_groups[0]["base_lr"] == 0.4


def test_cosine_middle_and_end_value():
    opt = _opt((2.0,))
    sched = WarmupCosine(
        opt, warmup_steps=10, total_steps=110, min_lr_ratio=0.1
    )
    assert sched.factor(60) == pytest.approx(0.55)
    assert sched.factor(110) == pytest.approx(0.1)
    assert sched.factor(10**6) == pytest.approx(0.1)
    values = [sched.factor(k) for k in range(10, 111)]
    assert all(b <= a for a, b in zip(values, values[1:]))
    for _ in range(200):
        sched.step()
    assert sched.current_lr == pytest.approx(0.2)


def test_no_warmup_starts_at_peak():
    sched = WarmupCosine(_opt((1.0,)), warmup_steps=0, total_steps=10)
    assert sched.current_lr == 1.0
    assert sched.factor(5) == pytest.approx(0.5)


def test_per_group_scales_preserved():
    opt = _opt((1.0, 0.5, 1.0), (None, 0.1, 0.25))
    sched = WarmupCosine(opt, warmup_steps=3, total_steps=30)
    for _ in range(17):
        f = sched.factor(sched.n_steps)
        lrs = [g["lr"] for g in opt.param_groups]
        assert lrs == pytest.approx([f, 0.05 * f, 0.25 * f])
        sched.step()
    assert sched.current_lr == pytest.approx(max(sched.group_lrs))


def test_speechbrain_call_style_matches_step_style():
    a_opt, b_opt = _opt((1.0,)), _opt((1.0,))
    a = WarmupCosine(a_opt, 3, 12)
    b = WarmupCosine(None, 3, 12)
    assert b.current_lr is None
    for _ in range(15):
        lr_a = a_opt.param_groups[0]["lr"]  # lr of the coming update
        _, lr_b = b(b_opt)  # called before the update
        assert lr_b == pytest.approx(lr_a)
        assert b_opt.param_groups[0]["lr"] == pytest.approx(lr_a)
        a.step()
        assert a.n_steps == b.n_steps


def test_save_load_round_trip(tmp_path):
    opt = _opt((1.0, 1.0), (None, 0.5))
    sched = WarmupCosine(opt, 5, 50, min_lr_ratio=0.05)
    for _ in range(23):
        sched.step()
    ckpt = Checkpointer(tmp_path, recoverables={"scheduler": sched})
    ckpt.save_checkpoint(meta={"lr": sched.current_lr})
    fresh_opt = _opt((1.0, 1.0), (None, 0.5))
    fresh = WarmupCosine(fresh_opt, 5, 50, min_lr_ratio=0.05)
    Checkpointer(
        tmp_path, recoverables={"scheduler": fresh}
    ).recover_if_possible()
    assert fresh.n_steps == 23
    assert fresh.group_lrs == pytest.approx(sched.group_lrs)
    # direct save / load (weights_only)
    sched.save(tmp_path / "s.ckpt")
    state = torch.load(tmp_path / "s.ckpt", weights_only=True)
    assert state == sched.state_dict() and isinstance(state["n_steps"], int)
    late = WarmupCosine(None, 5, 50, min_lr_ratio=0.05)
    late.load(tmp_path / "s.ckpt", True)
    late.attach(_opt((1.0, 1.0), (None, 0.5)))
    assert late.group_lrs == pytest.approx(sched.group_lrs)


def test_attach_keeps_existing_base_lr():
    opt = _opt((1.0,))
    sched = WarmupCosine(opt, 4, 10)
    sched.step()
    again = WarmupCosine(opt, 4, 10)  # e.g. after an optimiser state reload
    assert opt.param_groups[0]["base_lr"] == 1.0
    assert again.current_lr == pytest.approx(0.25)


def test_bad_schedule_arguments():
    with pytest.raises(ValueError, match="warmup_steps"):
        WarmupCosine(None, 20, 10)
    with pytest.raises(ValueError, match="total_steps"):
        WarmupCosine(None, 0, 0)
    with pytest.raises(ValueError, match="min_lr_ratio"):
        WarmupCosine(None, 0, 10, min_lr_ratio=2.0)


def test_clip_grad_norm_all_groups():
    a = nn.Parameter(torch.zeros(4))
    b = nn.Parameter(torch.zeros(9))
    c = nn.Parameter(torch.zeros(2))  # no grad
    opt = torch.optim.SGD([{"params": [a]}, {"params": [b, c]}], lr=0.1)
    a.grad = torch.full((4,), 3.0)
    b.grad = torch.full((9,), 4.0)
    total = clip_grad_norm_all(opt, max_norm=1.0)
    assert total.item() == pytest.approx(math.sqrt(4 * 9 + 9 * 16))
    assert torch.cat([a.grad, b.grad]).norm().item() == pytest.approx(
        1.0, rel=1e-5
    )
    # the ratio between groups is kept (a single global scale)
    assert (b.grad[0] / a.grad[0]).item() == pytest.approx(4 / 3, rel=1e-5)
    empty = torch.optim.SGD([c], lr=0.1)
    assert clip_grad_norm_all(empty, 1.0).item() == 0.0


def test_layer_decay_with_scheduler_end_to_end():
    model = ToyViT(depth=2)
    groups = param_groups(model, 0.05, lr=1e-3, layer_decay=0.5)
    opt = torch.optim.AdamW(groups)
    sched = WarmupCosine(opt, warmup_steps=2, total_steps=10)
    sched.step()
    for g in opt.param_groups:
        assert g["lr"] == pytest.approx(1e-3 * g["lr_scale"])


def test_schedule_counts_only_full_accumulation_windows():
    """5 batches with grad_accumulation_factor 2: SpeechBrain steps twice per epoch.

    The schedule must count 2 (not ceil(5 / 2) = 3), or the cosine never
    reaches its end and the EMA never reaches its final decay.
    """
    from speechbrain.utils.epoch_loop import EpochCounter

    from aasp_sb.brains.scheduled import ScheduledBrain
    from aasp_sb.schedulers import param_groups

    class Regress(ScheduledBrain):
        def init_optimizers(self):
            self.build_optimizer(param_groups(self.modules, 0.0), warmup_epochs=0)

        def compute_forward(self, batch, stage):
            return self.modules.lin(batch[0])

        def compute_objectives(self, pred, batch, stage):
            return ((pred - batch[1]) ** 2).mean()

    brain = Regress({"lin": torch.nn.Linear(2, 1)}, torch.optim.SGD, {"number_of_epochs": 2},
                    run_opts={"noprogressbar": True, "grad_accumulation_factor": 2})
    data = [(torch.randn(2), torch.randn(1)) for _ in range(10)]  # 5 batches of 2
    brain.fit(EpochCounter(2), data, train_loader_kwargs={"batch_size": 2})
    assert brain.steps_per_epoch == 2 and brain.optimizer_step == 4
    assert brain.lr_scheduler.current_lr == pytest.approx(0.0, abs=1e-12)
