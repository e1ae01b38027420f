import pytest
import torch
from speechbrain.utils.checkpoints import Checkpointer
from torch import nn

from aasp_sb.lobes.teacher import EMASchedule, EMATeacher


def _student():
    return nn.Sequential(
        nn.Linear(6, 8), nn.BatchNorm1d(8), nn.Dropout(0.5), nn.Linear(8, 3)
    )


def test_copy_is_frozen_eval_and_independent():
    student = _student()
    teacher = EMATeacher(student)
    assert not any(p.requires_grad for p in teacher.parameters())
    assert all(p.requires_grad for p in student.parameters())
    assert not teacher.training and not teacher.module[2].training
    for ps, pt in zip(student.parameters(), teacher.parameters()):
        assert torch.equal(ps, pt) and ps.data_ptr() != pt.data_ptr()


def test_stays_eval_after_train_even_inside_module_dict():
    student = _student()
    modules = nn.ModuleDict(
        {"student": student, "teacher": EMATeacher(student)}
    )
    modules.train()
    teacher = modules["teacher"]
    assert student.training
    assert not teacher.training
    assert not any(m.training for m in teacher.modules())
    x = torch.randn(4, 6)
    assert torch.equal(teacher(x), teacher(x))  # no dropout


def test_forward_builds_no_graph():
    teacher = EMATeacher(_student())
    out = teacher(torch.randn(4, 6, requires_grad=True))
    assert not out.requires_grad


def test_ema_update_math_exact():
    student = _student()
    teacher = EMATeacher(student)
    with torch.no_grad():
        # dyadic values: decay * t + (1 - decay) * s is exact in float32,
        # whatever the order of operations (or FMA) of the kernels
        for p in teacher.parameters():
            p.copy_(torch.randint(-64, 64, p.shape) / 8.0)
        for p in student.parameters():
            p.copy_(torch.randint(-64, 64, p.shape) / 8.0)
        student[1].running_mean.add_(1.0)
    before = [p.clone() for p in teacher.parameters()]
    decay = 0.75
    teacher.update(student, decay)
    for t0, s, t1 in zip(before, student.parameters(), teacher.parameters()):
        assert torch.equal(t1, t0 * decay + s * (1 - decay))
    assert torch.equal(teacher.module[1].running_mean, student[1].running_mean)
    # general values: equal up to float32 rounding
    with torch.no_grad():
        for p in student.parameters():
            p.add_(torch.randn_like(p))
    before = [p.clone() for p in teacher.parameters()]
    teacher.update(student, 0.999)
    for t0, s, t1 in zip(before, student.parameters(), teacher.parameters()):
        assert torch.allclose(t1, 0.999 * t0 + 0.001 * s, rtol=1e-6, atol=1e-7)
    # decay 1 keeps the teacher, decay 0 copies the student
    snapshot = [p.clone() for p in teacher.parameters()]
    teacher.update(student, 1.0)
    assert all(
        torch.equal(a, b) for a, b in zip(snapshot, teacher.parameters())
    )
    teacher.update(student, 0.0)
    assert all(
        torch.equal(a, b)
        for a, b in zip(student.parameters(), teacher.parameters())
    )
    assert not any(p.requires_grad for p in teacher.parameters())


def test_update_through_wrapper_and_mismatch():
    student = _student()
    teacher = EMATeacher(nn.DataParallel(student))
    teacher.update(nn.DataParallel(student), 0.5)
    with pytest.raises(ValueError, match="parameter tensors"):
        teacher.update(nn.Linear(6, 8), 0.5)
    with pytest.raises(ValueError, match="decay"):
        teacher.update(student, 1.5)


def test_checkpointer_round_trip(tmp_path):
    student = _student()
    teacher = EMATeacher(student)
    with torch.no_grad():
        for p in student.parameters():
            p.add_(1.0)
    teacher.update(student, 0.3)
    ckpt = Checkpointer(tmp_path, recoverables={"teacher": teacher})
    ckpt.save_checkpoint()
    fresh = EMATeacher(_student())
    Checkpointer(
        tmp_path, recoverables={"teacher": fresh}
    ).recover_if_possible()
    for a, b in zip(teacher.state_dict().values(), fresh.state_dict().values()):
        assert torch.equal(a, b)
    assert not fresh.training
    assert not any(p.requires_grad for p in fresh.parameters())


@pytest.mark.parametrize("mode", ["linear", "cosine"])
def test_schedule_endpoints_monotonic_clamped(mode):
    sched = EMASchedule(0.9995, 0.99999, total_steps=1000, mode=mode)
    values = [sched(s) for s in range(0, 1001, 50)]
    assert values[0] == 0.9995 and values[-1] == 0.99999
    assert all(b >= a for a, b in zip(values, values[1:]))
    assert sched(10**7) == 0.99999 and sched(-5) == 0.9995
    assert sched(500) == pytest.approx((0.9995 + 0.99999) / 2)
    assert sched.decay(200) == sched(200)


def test_schedule_cosine_is_slower_at_start():
    lin = EMASchedule(0.9, 1.0, total_steps=100)
    cos = EMASchedule(0.9, 1.0, total_steps=100, mode="cosine")
    assert cos(10) < lin(10) and cos(90) > lin(90)


def test_schedule_bad_arguments():
    with pytest.raises(ValueError, match="total_steps"):
        EMASchedule(0.9, 0.99)
    with pytest.raises(ValueError, match="mode"):
        EMASchedule(0.9, 0.99, 10, mode="exp")
    with pytest.raises(ValueError, match="end"):
        EMASchedule(0.9, 1.5, 10)


def _vit(depth=2):
    from aasp_sb.lobes.aape import make_stem
    from aasp_sb.lobes.encoder import AudioViT

    torch.manual_seed(0)
    return AudioViT(make_stem(True, embed_dim=32, num_modes=4), 32, depth, 4, max_frames=64)


@pytest.mark.parametrize("mode,top_k", [("masked", 1), ("full", 1), ("masked", 2)])
def test_masked_teacher_forward_is_the_target_computation(mode, top_k):
    """The teacher's own forward gives exactly what the step used to compute by hand."""
    from aasp_sb.lobes.teacher import MaskedTeacher
    from aasp_sb.losses import layer_norm_targets
    from aasp_sb.masking import gather_tokens, multi_mask

    enc = _vit()
    teacher = MaskedTeacher(enc, teacher_input=mode, target_layers=top_k)
    feats = torch.randn(3, 64, 80)
    _, masked = multi_mask(3, 20, 2, 0.7, generator=torch.Generator().manual_seed(1))
    got = teacher(feats, masked)
    with torch.no_grad():
        tokens, _, _ = enc.embed(feats)
        if mode == "masked":
            out, layers = enc.encode(gather_tokens(tokens, masked), return_layers=True)
            ref = layer_norm_targets(layers, top_k)
        else:
            out, layers = enc.encode(tokens, return_layers=True)
            ref = gather_tokens(layer_norm_targets(layers, top_k), masked)
    assert got.shape == (6, 14, 32) and not got.requires_grad
    torch.testing.assert_close(got, ref)
    # same state-dict keys as the plain EMA teacher: old checkpoints still load
    assert teacher.state_dict().keys() == EMATeacher(enc).state_dict().keys()


def test_compiled_masked_teacher_matches_eager_and_follows_the_ema():
    """``torch.compile`` with inductor (what SpeechBrain's --compile uses) covers the pass.

    ``update`` reached through the compiled wrapper moves every teacher weight
    by the EMA formula, and the compiled forward then uses the new weights
    (it equals the eager pass of the updated teacher, not the old output).
    """
    from aasp_sb.lobes.teacher import MaskedTeacher
    from aasp_sb.masking import multi_mask

    torch._dynamo.reset()
    teacher = MaskedTeacher(_vit(depth=1))
    student = _vit(depth=1)
    with torch.no_grad():  # dyadic weights: the EMA below is exact in float32
        for p in teacher.parameters():
            p.copy_(torch.randint(-16, 16, p.shape) / 64.0)
        for p in student.parameters():
            p.copy_(torch.randint(-16, 16, p.shape) / 64.0)
    feats = torch.randn(2, 64, 80)
    _, masked = multi_mask(2, 20, 3, 0.7, generator=torch.Generator().manual_seed(0))
    compiled = torch.compile(teacher, backend="inductor", fullgraph=False)
    before = compiled(feats, masked)
    torch.testing.assert_close(before, teacher(feats, masked))
    t0 = [p.clone() for p in teacher.parameters()]
    decay = 0.75
    compiled.update(student, decay)  # attribute access reaches the module
    for a, s, t1 in zip(t0, student.parameters(), compiled.parameters()):
        assert torch.equal(t1, decay * a + (1 - decay) * s)
    assert any(not torch.equal(a, t1) for a, t1 in zip(t0, teacher.parameters()))
    after = compiled(feats, masked)
    torch.testing.assert_close(after, teacher(feats, masked))
    assert (after - before).abs().max() > 1e-3  # not a stale, compiled-in copy
    torch._dynamo.reset()


def test_masked_teacher_rejects_bad_keys():
    from aasp_sb.lobes.teacher import MaskedTeacher

    with pytest.raises(ValueError, match="teacher_input"):
        MaskedTeacher(_vit(), teacher_input="half")
    with pytest.raises(ValueError, match="target_layers"):
        MaskedTeacher(_vit(depth=2), target_layers=3)
