"""Multi-process correctness of AaSP pre-training (issue 13, part 4).

- masks are seeded by (seed, epoch, step, rank): two DDP ranks draw different
  masks, a resume draws the same ones again;
- a non-finite loss on one rank drops the same optimiser step on every rank
  (no hang in DDP's all-reduce, identical weights afterwards);
- SpeechBrain's ``on_fit_batch_start`` / ``on_fit_batch_end`` hooks run.

Run as a script (``torchrun ... tests/test_ddp_pretrain.py <recipe args>``)
this file is the recipe with :class:`RecordingBrain` in place of
``AaSPBrain``: every rank writes what it saw to ``$AASP_DDP_RECORD``.
"""

import hashlib
import json
import os
import shutil
import subprocess
import sys

import pytest
import speechbrain as sb
import torch
from pretrain_utils import (
    TINY,
    TINY_OVERRIDES,
    free_port,
    load_recipe,
    recipe_args,
)

import aasp_sb.brains.pretrain as pretrain
from aasp_sb.brains.pretrain import (
    AaSPBrain,
    NonFiniteLossError,
    distributed_rank,
)
from aasp_sb.lobes.teacher import unwrap_module

RECORD_ENV = "AASP_DDP_RECORD"


def digest(tensors):
    """SHA-1 of the bytes of a tensor or of a state dict's tensors (key order)."""
    if torch.is_tensor(tensors):
        tensors = {"": tensors}
    h = hashlib.sha1()
    for key in sorted(tensors):
        h.update(key.encode())
        h.update(tensors[key].detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


class RecordingBrain(AaSPBrain):
    """``AaSPBrain`` that records, per training micro-batch, what a test checks.

    ``record``: one dict per ``on_fit_batch_end`` (epoch, step, should_step,
    loss finite, optimiser step, window dropped, digest of the training masks,
    digest of the student's weights, whether the student has gradients, and
    under DDP how many gradient buckets DDP all-reduced during it);
    ``hook_calls``: ``(hook, epoch, step, should_step)`` in call order.
    """

    def on_fit_start(self):
        self.record, self.hook_calls = [], []
        self._mask_digest = None
        self._allreduces = 0
        super().on_fit_start()
        student = self.modules.student
        if isinstance(student, torch.nn.parallel.DistributedDataParallel):
            student.register_comm_hook(None, self._counting_allreduce)

    def _counting_allreduce(self, state, bucket):
        from torch.distributed.algorithms.ddp_comm_hooks.default_hooks import (
            allreduce_hook,
        )

        self._allreduces += 1
        return allreduce_hook(state, bucket)

    def draw_masks(self, batch_size, num_tokens, stage):
        visible, masked = super().draw_masks(batch_size, num_tokens, stage)
        if stage == sb.Stage.TRAIN:
            self._mask_digest = digest(visible)
        return visible, masked

    def _where(self):
        return int(self.hparams.epoch_counter.current), int(self.step)

    def on_fit_batch_start(self, batch, should_step):
        super().on_fit_batch_start(batch, should_step)
        self.hook_calls.append(("start", *self._where(), bool(should_step)))

    def on_fit_batch_end(self, batch, outputs, loss, should_step):
        super().on_fit_batch_end(batch, outputs, loss, should_step)
        self.hook_calls.append(("end", *self._where(), bool(should_step)))
        student = unwrap_module(self.modules.student)
        epoch, step = self._where()
        self.record.append({
            "epoch": epoch,
            "step": step,
            "should_step": bool(should_step),
            "finite": bool(torch.isfinite(loss)),
            "has_outputs": "student" in outputs,
            "optimizer_step": int(self.optimizer_step),
            "dropped": bool(self.window_dropped),
            "mask": self._mask_digest,
            "weights": digest(student.state_dict()),
            "grads_none": all(p.grad is None for p in student.parameters()),
            "allreduces": self._allreduces,
        })
        self._allreduces = 0


def run_driver(argv):
    """Entry point under torchrun: the recipe with :class:`RecordingBrain`."""
    from aasp_sb.distributed import finish_distributed

    recipe = load_recipe()
    recipe.AaSPBrain = RecordingBrain
    brain = recipe.main(argv)
    rank = distributed_rank()
    folder = os.environ[RECORD_ENV]
    with open(os.path.join(folder, f"rank{rank}.json"), "w", encoding="utf-8") as f:
        json.dump({
            "record": brain.record,
            "skipped_steps": int(brain.skipped_steps),
            "optimizer_step": int(brain.optimizer_step),
        }, f)
    torch.save(
        {
            "student": unwrap_module(brain.modules.student).state_dict(),
            "teacher": unwrap_module(brain.modules.teacher).state_dict(),
        },
        os.path.join(folder, f"rank{rank}.pt"),
    )
    finish_distributed()


# ---------------------------------------------------------------- tests
@pytest.fixture(scope="module")
def audio_folder(tmp_path_factory):
    from aasp_sb.data.demo import make_unlabeled_folder

    folder = tmp_path_factory.mktemp("audio")
    make_unlabeled_folder(str(folder), n=20, seconds=(0.3, 2.5), seed=3)
    return folder


# 16 training clips / 2 ranks / batch 2 = 4 micro-batches per epoch and rank;
# with grad_accumulation_factor 2 the windows are steps (1, 2) and (3, 4).
# Rank 1 fails inside the first window of epoch 1 (a no_sync micro-batch),
# rank 0 on the synchronising micro-batch of the last window of epoch 2.
FORCED = [[1, 1, 1], [0, 2, 4]]


@pytest.fixture(scope="module")
def ddp_run(audio_folder, tmp_path_factory):
    """One 2-process gloo run on CPU; each rank's record and final weights."""
    torchrun = shutil.which("torchrun", path=os.path.dirname(sys.executable))
    tmp = tmp_path_factory.mktemp("ddp")
    record = tmp / "record"
    record.mkdir()
    cmd = [
        torchrun, "--nproc_per_node=2", "--master_addr=127.0.0.1",
        f"--master_port={free_port()}", __file__,
    ]
    cmd += recipe_args(
        audio_folder, tmp / "out", number_of_epochs=2, batch_size=2,
        grad_accumulation_factor=2, debug_nonfinite_steps=json.dumps(FORCED),
    )
    cmd += ["--distributed_backend=gloo"]
    env = dict(os.environ, OMP_NUM_THREADS="1", **{RECORD_ENV: str(record)})
    try:
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=180)
    except subprocess.TimeoutExpired as err:  # a rank waits in a collective forever
        tail = (err.stderr or b"")[-3000:]
        pytest.fail(f"torchrun did not finish within 180 s (hang?): {tail!r}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    ranks = []
    for rank in (0, 1):
        info = json.loads((record / f"rank{rank}.json").read_text())
        info["state"] = torch.load(record / f"rank{rank}.pt", weights_only=True)
        ranks.append(info)
    return ranks


def test_ranks_draw_different_masks(ddp_run):
    r0, r1 = (info["record"] for info in ddp_run)
    assert [(r["epoch"], r["step"]) for r in r0] == [(r["epoch"], r["step"]) for r in r1]
    assert len(r0) == 8  # 2 epochs x 4 micro-batches
    assert r0[0]["mask"] and r1[0]["mask"]
    assert r0[0]["mask"] != r1[0]["mask"]  # first step
    assert all(a["mask"] != b["mask"] for a, b in zip(r0, r1))  # and every step
    assert len({r["mask"] for r in r0}) == len(r0)  # and every step of a rank


def test_nonfinite_loss_on_one_rank_drops_the_step_on_both(ddp_run):
    r0, r1 = (info["record"] for info in ddp_run)
    at = {rank: {(r["epoch"], r["step"]): r for r in rec} for rank, rec in ((0, r0), (1, r1))}
    # the fault is where it was forced, and only there
    for rank in (0, 1):
        bad = {k for k, r in at[rank].items() if not r["finite"]}
        assert bad == {(e, s) for rk, e, s in FORCED if rk == rank}, (rank, bad)
    for rank in (0, 1):
        rec = at[rank]
        dropped = {k for k, r in rec.items() if r["dropped"]}
        assert dropped == {(1, 2), (2, 4)}, (rank, dropped)  # both windows, both ranks
        # window 1 of epoch 1 dropped: no update at all, not even from finite micro-batches
        assert rec[(1, 2)]["optimizer_step"] == 0
        assert rec[(1, 1)]["weights"] == rec[(1, 2)]["weights"]
        assert rec[(1, 4)]["optimizer_step"] == 1
        # last window of epoch 2 dropped: weights as after the step before it
        assert rec[(2, 2)]["optimizer_step"] == 2
        assert rec[(2, 4)]["optimizer_step"] == 2
        assert rec[(2, 2)]["weights"] == rec[(2, 4)]["weights"]
        assert rec[(2, 4)]["grads_none"]  # the dropped window's gradients are gone
    for info in ddp_run:
        assert info["skipped_steps"] == 2 and info["optimizer_step"] == 2
    # same weights on both ranks (student and EMA teacher), all finite
    for part in ("student", "teacher"):
        a, b = ddp_run[0]["state"][part], ddp_run[1]["state"][part]
        assert a.keys() == b.keys()
        for key in a:
            assert torch.equal(a[key], b[key]), (part, key)
            assert torch.isfinite(a[key]).all(), (part, key)
    assert [r["weights"] for r in r0] == [r["weights"] for r in r1]
    # DDP's gradient all-reduce runs on every synchronising micro-batch (also
    # when its window is dropped) and never inside no_sync, even right after a
    # dropped window: the reducer never waits for a backward that did not run
    for rec in (r0, r1):
        assert [r["allreduces"] > 0 for r in rec] == [r["should_step"] for r in rec]


def tiny_brain(tmp_path, **overrides):
    """A RecordingBrain on aasp_tiny with the tests' tiny model (no checkpoints)."""
    from hyperpyyaml import load_hyperpyyaml

    opts = {k: v for k, v in TINY_OVERRIDES.items() if k not in ("batch_size", "valid_fraction")}
    opts.update(data_folder=str(tmp_path), output_folder=str(tmp_path), log_interval=0)
    opts.update(overrides)
    hp = load_hyperpyyaml(TINY.read_text(), opts)
    hp["opt_class"].keywords["lr"] = 1e-3
    return RecordingBrain(
        hp["modules"], hp["opt_class"], hp,
        run_opts={"noprogressbar": True, "device": "cpu"},
    )


def fit(brain, clips=4):
    from speechbrain.dataio.batch import PaddedBatch

    g = torch.Generator().manual_seed(0)
    data = [{"id": str(i), "sig": torch.randn(63 * 160, generator=g)} for i in range(clips)]
    brain.fit(
        brain.hparams.epoch_counter, data,
        train_loader_kwargs={"batch_size": 1, "collate_fn": PaddedBatch},
    )


def test_fit_batch_hooks_are_called(tmp_path):
    """SpeechBrain's hooks run around every micro-batch, also in a dropped window."""
    brain = tiny_brain(
        tmp_path, number_of_epochs=2, grad_accumulation_factor=2,
        debug_nonfinite_steps=[[0, 1, 3]],
    )
    fit(brain)
    expected = []
    for epoch in (1, 2):
        for step in (1, 2, 3, 4):
            for hook in ("start", "end"):
                expected.append((hook, epoch, step, step % 2 == 0))
    assert brain.hook_calls == expected
    assert all(r["has_outputs"] for r in brain.record)  # end gets compute_forward's outputs
    rec = {(r["epoch"], r["step"]): r for r in brain.record}
    assert not rec[(1, 3)]["finite"]  # end gets the (forced) loss
    # single process, same rule: the window (3, 4) is dropped whole
    assert rec[(1, 3)]["grads_none"]  # no backward for the non-finite micro-batch
    assert rec[(1, 4)]["dropped"] and rec[(1, 4)]["grads_none"]
    assert rec[(1, 4)]["weights"] == rec[(1, 2)]["weights"]
    assert rec[(1, 4)]["optimizer_step"] == 1
    assert brain.optimizer_step == 3 and brain.skipped_steps == 1


def test_nonfinite_patience_still_stops_a_single_process_run(tmp_path):
    brain = tiny_brain(
        tmp_path, number_of_epochs=1, nonfinite_patience=2,
        debug_nonfinite_steps=[[0, 1, s] for s in range(1, 5)],
    )
    with pytest.raises(NonFiniteLossError, match="2 consecutive"):
        fit(brain)
    assert brain.optimizer_step == 0
    assert brain.consecutive_nonfinite == 2


def test_masks_depend_on_the_rank_only_in_training(tmp_path, monkeypatch):
    brain = tiny_brain(tmp_path, number_of_epochs=1)
    brain.hparams.epoch_counter.current = 3
    brain.step = 5

    def masks(rank, stage):
        monkeypatch.setattr(pretrain, "distributed_rank", lambda: rank)
        return brain.draw_masks(2, 16, stage)[0]

    train0 = masks(0, sb.Stage.TRAIN)
    assert torch.equal(train0, masks(0, sb.Stage.TRAIN))  # same (seed, epoch, step, rank)
    assert not torch.equal(train0, masks(1, sb.Stage.TRAIN))
    assert torch.equal(masks(0, sb.Stage.VALID), masks(1, sb.Stage.VALID))
    brain.hparams.epoch_counter.current = 4
    assert not torch.equal(train0, masks(0, sb.Stage.TRAIN))


def test_bad_debug_nonfinite_steps_is_refused():
    from aasp_sb.brains.pretrain import check_pretrain_hparams

    with pytest.raises(ValueError, match="debug_nonfinite_steps"):
        check_pretrain_hparams({"debug_nonfinite_steps": [[0, "1", 2]]})


if __name__ == "__main__":
    run_driver(sys.argv[1:])
