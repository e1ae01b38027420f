"""AaSPBrain: teacher-student masked modelling with multi-mask contrastive regularisation.

One training step (DESIGN §4):

1. waveform crops -> normalised log-mel -> the student's stem **once** per clip;
2. ``M`` random masks per clip; the student encodes the visible tokens of all
   ``B * M`` views in one batch;
3. the cross-attention predictor predicts the masked tokens' features from the
   student's outputs;
4. the EMA teacher encodes the masked tokens (``teacher_input: masked``) or
   the whole clip once (``full``), targets are layer-normalised;
5. loss = ``2 - 2 cos`` over masked positions + ``lambda`` x multi-positive
   InfoNCE between the views' pooled student outputs;
6. after each optimiser step: lr schedule, EMA update of the teacher.

SpeechBrain 1.1.2 pitfalls handled here: gradients are clipped over *all*
parameter groups, the frozen teacher is kept out of the optimiser and in eval
mode, a non-finite loss skips the update (optimiser and EMA untouched) and
stops the run after ``nonfinite_patience`` in a row, checkpoint meta values
are plain floats, and the lr schedule keeps per-group scales.

Multi-GPU (``torchrun``, DDP):

- training masks are seeded by ``(seed, epoch, step, rank)`` (:func:`mask_seed`):
  ranks draw different masks, and a resume with the same world size draws the
  same masks again. Validation / test masks depend on ``(seed, step)`` only:
  SpeechBrain 1.1.2 does not shard the valid / test sets (every rank evaluates
  all of it), so every rank sees the same masks and the reduced statistics
  equal a single-process evaluation.
- the non-finite skip is decided **collectively**, once per optimiser step:
  before the backward of the micro-batch that synchronises gradients, the
  ranks all-reduce how many of them met a non-finite loss in the current
  accumulation window. If any did, **the whole window is dropped on every
  rank** (all its micro-batches, including the finite ones): no optimiser
  step, no lr or EMA step, gradients zeroed, one skipped step counted (and
  logged) on every rank, so ``nonfinite_patience`` stops all ranks together.
  Within a window a rank skips the backward of its own non-finite micro-batch
  and of the rest of its window (those run under ``no_sync``: no collective,
  safe); the synchronising backward itself still runs on every rank under DDP
  (its gradients are then discarded), because a DDP forward that is not
  followed by its backward leaves DDP's reducer waiting for gradient hooks,
  which the next ``no_sync`` backward would then trigger.
"""

import hashlib
import json
import logging
import os
import time

import speechbrain as sb
import torch
from speechbrain.utils.distributed import is_distributed_initialized

from aasp_sb.brains.scheduled import ScheduledBrain
from aasp_sb.distributed import ShardSampler
from aasp_sb.evaluation.metrics import rankme
from aasp_sb.lobes.teacher import (
    TEACHER_INPUTS,
    MaskedTeacher,
    masked_targets,
    unwrap_module,
)
from aasp_sb.losses import multi_positive_infonce, regression_loss
from aasp_sb.masking import multi_mask
from aasp_sb.schedulers import param_groups

logger = logging.getLogger(__name__)


class NonFiniteLossError(RuntimeError):
    """Raised when too many consecutive steps had a non-finite loss."""


def distributed_rank():
    """The rank of this process in the default process group (0 when not distributed).

    Returns
    -------
    int

    Example
    -------
    >>> distributed_rank()
    0
    """
    if is_distributed_initialized():
        return int(torch.distributed.get_rank())
    return 0


def mask_seed(seed, epoch, step, rank=0, stage=sb.Stage.TRAIN):
    """The seed of the masks drawn at one step.

    Training masks depend on ``(seed, epoch, step, rank)``: the ranks of a
    DDP run draw different masks, and a resumed run (same seed, same world
    size; the epoch and step come back with the checkpoint) draws the same
    masks again. Validation and test masks depend on ``(seed, step)`` only,
    so they are the same every epoch and on every rank (SpeechBrain does not
    shard the validation set: every rank evaluates all of it). The tuple is
    hashed (BLAKE2b), so no two tuples share a seed by arithmetic accident.

    Arguments
    ---------
    seed : int
        The run's ``seed``.
    epoch : int
        Current epoch (1-based; 0 before the first).
    step : int
        SpeechBrain's batch counter within the stage (``Brain.step``).
    rank : int
        Process rank (:func:`distributed_rank`); ignored outside training.
    stage : speechbrain.Stage
        ``TRAIN``, ``VALID`` or ``TEST``.

    Returns
    -------
    int
        A seed in ``[0, 2**63)`` for ``torch.Generator.manual_seed``.

    Example
    -------
    >>> a = mask_seed(1986, 1, 3, rank=0)
    >>> a == mask_seed(1986, 1, 3, rank=0), a == mask_seed(1986, 1, 3, rank=1)
    (True, False)
    >>> mask_seed(1986, 1, 3, 0, sb.Stage.VALID) == mask_seed(1986, 2, 3, 1, sb.Stage.VALID)
    True
    """
    if stage == sb.Stage.TRAIN:
        key = ("train", int(seed), int(epoch), int(step), int(rank))
    else:
        key = (stage.name.lower(), int(seed), int(step))
    digest = hashlib.blake2b(repr(key).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & ((1 << 63) - 1)


def parse_nonfinite_steps(value):
    """Reads ``debug_nonfinite_steps``: where to force a non-finite loss (testing aid).

    Arguments
    ---------
    value : list or None
        ``[[rank, epoch, step], ...]``: at SpeechBrain's batch ``step``
        (1-based, counted within the epoch) of ``epoch`` (1-based), the
        training loss of process ``rank`` is replaced by NaN (still attached
        to the graph, as a real overflow would be). ``None`` or ``[]``: off.

    Returns
    -------
    set of tuple
        ``{(rank, epoch, step), ...}``.

    Raises
    ------
    ValueError
        Naming the key, when an entry is not three non-negative integers.

    Example
    -------
    >>> sorted(parse_nonfinite_steps([[1, 1, 2], [0, 2, 4]]))
    [(0, 2, 4), (1, 1, 2)]
    >>> parse_nonfinite_steps(None)
    set()
    >>> parse_nonfinite_steps([[1, 2]])
    Traceback (most recent call last):
    ...
    ValueError: debug_nonfinite_steps entries must be [rank, epoch, step] (integers >= 0), got [1, 2]
    """
    if value is None:
        return set()
    if not isinstance(value, (list, tuple)):
        raise ValueError(
            f"debug_nonfinite_steps must be a list of [rank, epoch, step], got {value!r}"
        )
    out = set()
    for entry in value:
        ok = isinstance(entry, (list, tuple)) and len(entry) == 3 and all(
            isinstance(x, int) and not isinstance(x, bool) and x >= 0 for x in entry
        )
        if not ok:
            raise ValueError(
                "debug_nonfinite_steps entries must be [rank, epoch, step] "
                f"(integers >= 0), got {entry!r}"
            )
        out.add(tuple(entry))
    return out


def check_pretrain_hparams(hparams):
    """Validates the pre-training keys before anything is built or trained.

    Arguments
    ---------
    hparams : dict
        Loaded hyper-parameters.

    Raises
    ------
    ValueError
        Naming the offending key.

    Example
    -------
    >>> check_pretrain_hparams({"mask_ratio": 0.7, "num_masks": 4, "teacher_input": "masked"})
    >>> check_pretrain_hparams({"mask_ratio": 1.2})
    Traceback (most recent call last):
    ...
    ValueError: mask_ratio must be in (0, 1), got 1.2
    """
    ratio = hparams.get("mask_ratio", 0.7)
    if not 0.0 < float(ratio) < 1.0:
        raise ValueError(f"mask_ratio must be in (0, 1), got {ratio}")
    if int(hparams.get("num_masks", 1)) < 1:
        raise ValueError(f"num_masks must be >= 1, got {hparams['num_masks']}")
    contrastive = float(hparams.get("contrastive_weight", 0.0))
    if contrastive > 0 and int(hparams.get("num_masks", 1)) < 2:
        raise ValueError(
            "contrastive_weight > 0 needs num_masks >= 2 (the views of a clip "
            "are each other's positives)"
        )
    mode = hparams.get("teacher_input", "masked")
    if mode not in TEACHER_INPUTS:
        raise ValueError(f"teacher_input must be one of {TEACHER_INPUTS}, got {mode!r}")
    teacher = unwrap_module(hparams.get("teacher"))
    if isinstance(teacher, MaskedTeacher):
        for key, own in (
            ("teacher_input", teacher.teacher_input),
            ("target_layers", teacher.target_layers),
        ):
            if key in hparams and hparams[key] != own:
                raise ValueError(
                    f"{key}={hparams[key]!r} but the teacher module was built with "
                    f"{key}={own!r}: pass the same key to MaskedTeacher in the YAML"
                )
    if float(hparams.get("tau", 0.2)) <= 0:
        raise ValueError(f"tau must be positive, got {hparams['tau']}")
    parse_nonfinite_steps(hparams.get("debug_nonfinite_steps"))


class AaSPBrain(ScheduledBrain):
    """Pre-trains AaPE + ViT with AaSP's objective.

    Expected ``modules``: ``compute_features`` (waveform -> log-mel),
    ``student`` (:class:`~aasp_sb.lobes.student.MaskedStudent`: encoder,
    predictor and contrastive head, so DDP sees one forward), ``teacher``
    (:class:`~aasp_sb.lobes.teacher.EMATeacher` of the encoder). The student
    encoder is also expected as ``hparams.encoder``.

    Expected hparams: ``num_masks``, ``mask_ratio``, ``teacher_input``,
    ``target_layers``, ``contrastive_weight``, ``tau``, ``lr`` (peak lr),
    ``weight_decay``, ``warmup_epochs``, ``number_of_epochs``,
    ``ema_schedule`` (an :class:`~aasp_sb.lobes.teacher.EMASchedule` built
    with ``total_steps`` set here), ``seed``; optional ``log_interval``
    (steps between lines of ``metrics.jsonl``, which also get the
    throughput ``clips_per_s``), ``rankme_clips`` (validation embeddings kept
    for RankMe over all ranks, default 4096), ``tensorboard_logger`` (a
    SpeechBrain ``TensorboardLogger``: per-step loss parts, lr, EMA decay and
    throughput, per-epoch statistics and RankMe), ``train_logger``,
    ``epoch_counter``. SpeechBrain's run option ``nonfinite_patience``
    (YAML or ``--nonfinite_patience``) is the number of consecutive
    dropped optimiser steps (non-finite losses) after which the run stops;
    ``debug_nonfinite_steps`` (testing aid, see :func:`parse_nonfinite_steps`)
    forces NaN losses at chosen ``(rank, epoch, step)``.

    SpeechBrain's hooks ``on_fit_batch_start(batch, should_step)`` and
    ``on_fit_batch_end(batch, outputs, loss, should_step)`` run around every
    training micro-batch, as in ``Brain.fit_batch`` (``should_step``: the
    micro-batch closes an accumulation window; ``self.window_dropped`` is
    True in ``on_fit_batch_end`` when that window was dropped for a
    non-finite loss). Masks come from :meth:`draw_masks`, which a subclass
    can override (e.g. to record them).

    The batch must provide ``sig`` (fixed-length waveform crops, see
    :func:`aasp_sb.data.pipeline.pretrain_dataset`) or ``feats`` (log-mel
    crops from :class:`~aasp_sb.data.shards.LogMelShardDataset`).

    Example
    -------
    >>> import pathlib, aasp_sb
    >>> from hyperpyyaml import load_hyperpyyaml
    >>> from speechbrain.dataio.batch import PaddedBatch
    >>> yaml = pathlib.Path(aasp_sb.__file__).parents[1] / "hparams" / "aasp_tiny.yaml"
    >>> tmp = getfixture("tmp_path")
    >>> hp = load_hyperpyyaml(yaml.read_text(), {
    ...     "data_folder": str(tmp), "output_folder": str(tmp), "embed_dim": 32,
    ...     "depth": 1, "num_heads": 2, "crop_frames": 64, "aape_modes": 4,
    ...     "predictor_dim": 32, "predictor_depth": 1, "predictor_heads": 2,
    ...     "number_of_epochs": 1})
    >>> hp["opt_class"].keywords["lr"] = 1e-3
    >>> brain = AaSPBrain(hp["modules"], hp["opt_class"], hp,
    ...                   run_opts={"noprogressbar": True, "device": "cpu"},
    ...                   checkpointer=hp["checkpointer"])
    >>> clips = [{"id": str(i), "sig": torch.randn(63 * 160)} for i in range(4)]
    >>> brain.fit(hp["epoch_counter"], clips, clips[:2],
    ...           train_loader_kwargs={"batch_size": 2, "collate_fn": PaddedBatch},
    ...           valid_loader_kwargs={"batch_size": 2, "collate_fn": PaddedBatch})
    >>> brain.optimizer_step
    2
    """

    def make_dataloader(self, dataset, stage, ckpt_prefix="dataloader-", **loader_kwargs):
        """SpeechBrain's loader; under DDP, validation and test are sharded across ranks.

        Each rank evaluates every ``world``-th clip (:class:`ShardSampler`);
        loss sums and RankMe are then combined across ranks, so the figures
        cover the whole set once instead of every rank computing all of it.
        """
        if (
            stage != sb.Stage.TRAIN
            and is_distributed_initialized()
            and not isinstance(dataset, torch.utils.data.DataLoader)
            and not isinstance(dataset, torch.utils.data.IterableDataset)
            and "sampler" not in loader_kwargs
            and "batch_sampler" not in loader_kwargs
        ):
            dist = torch.distributed
            loader_kwargs = dict(loader_kwargs, shuffle=False)
            loader_kwargs["sampler"] = ShardSampler(len(dataset), dist.get_rank(), dist.get_world_size())
        return super().make_dataloader(dataset, stage, ckpt_prefix, **loader_kwargs)

    def on_fit_start(self):
        """Checks the config, then the usual SpeechBrain start-up (optimisers, recovery)."""
        check_pretrain_hparams(vars(self.hparams))
        self.consecutive_nonfinite = 0
        self.skipped_steps = 0
        self.forced_nonfinite = parse_nonfinite_steps(
            getattr(self.hparams, "debug_nonfinite_steps", None)
        )
        self._reset_window()
        self._stage_sums = {}
        self._valid_embeddings = []
        super().on_fit_start()
        self.modules.teacher.train(False)

    # ------------------------------------------------------------ optimiser
    def init_optimizers(self):
        """AdamW over the student (teacher excluded), weight decay on matrices only."""
        groups = param_groups(self.modules.student, self.hparams.weight_decay)
        self.build_optimizer(groups, self.hparams.warmup_epochs)
        self.hparams.ema_schedule.total_steps = self.total_steps

    def after_optimizer_step(self):
        """EMA update of the teacher with the scheduled decay."""
        self.ema_decay = self.hparams.ema_schedule(self.optimizer_step)
        self.modules.teacher.update(self.hparams.encoder, self.ema_decay)

    # defaults for Brains driven without ``fit`` (benchmarks)
    forced_nonfinite = frozenset()
    window_dropped = False

    def fit_batch(self, batch):
        """One training micro-batch; the optimiser steps when it closes a window.

        A non-finite loss on any rank drops the whole accumulation window on
        every rank (module docstring); SpeechBrain's ``on_fit_batch_start`` /
        ``on_fit_batch_end`` hooks are called as in ``Brain.fit_batch``.

        Arguments
        ---------
        batch : PaddedBatch
            A training batch (``sig`` or ``feats``).

        Returns
        -------
        torch.Tensor
            The detached loss on the CPU (non-finite when it was).
        """
        self._maybe_exit_for_test()
        should_step = (self.step % self.grad_accumulation_factor) == 0
        self.on_fit_batch_start(batch, should_step)
        if not hasattr(self, "_window_micro_batches"):
            self._reset_window()
        self._window_micro_batches += 1
        with self.no_sync(not should_step):
            with self.training_ctx:
                outputs = self.compute_forward(batch, sb.Stage.TRAIN)
                loss = self.compute_objectives(outputs, batch, sb.Stage.TRAIN)
            loss = self.inject_nonfinite(loss)
            if not torch.isfinite(loss):
                self._window_nonfinite = True
                self._window_clips += list(getattr(batch, "id", []))
            bad_ranks = self._ranks_with_nonfinite() if should_step else 0
            if should_step:
                # under DDP this backward carries the gradient all-reduce: every
                # rank runs it (a dropped window's gradients are discarded below)
                backward = bad_ranks == 0 or self._ddp_wrapped()
            else:  # no_sync: local, safe to skip on this rank alone
                backward = not self._window_nonfinite
            if backward:
                self.scaler.scale(loss / self.grad_accumulation_factor).backward()
        self.window_dropped = bool(bad_ranks)
        if should_step:
            if bad_ranks:
                self._skip_nonfinite(bad_ranks)
            else:
                self.consecutive_nonfinite = 0
                self.optimizers_step()
                self._log_step(outputs, loss)
            self._reset_window()
        self.on_fit_batch_end(batch, outputs, loss, should_step)
        return loss.detach().cpu()

    def _maybe_exit_for_test(self):
        """Testing aid (``debug_exit_at: [rank, epoch, step]``): this process dies there.

        Only on a run's first attempt (``TORCHELASTIC_RESTART_COUNT`` unset or
        0), so a ``torchrun --max-restarts`` restart gets past the point: the
        way the tests show that a lost worker's group resumes from the last
        intra-epoch checkpoint.
        """
        where = getattr(self.hparams, "debug_exit_at", None)
        if not where or os.environ.get("TORCHELASTIC_RESTART_COUNT", "0") != "0":
            return
        epoch = int(getattr(self.hparams.epoch_counter, "current", 0) or 0)
        if [int(v) for v in where] == [distributed_rank(), epoch, int(self.step)]:
            logger.warning("debug_exit_at %s: this process exits now (testing aid)", list(where))
            logging.shutdown()
            os._exit(17)

    def inject_nonfinite(self, loss):
        """Testing aid: NaN loss at the ``(rank, epoch, step)`` of ``debug_nonfinite_steps``.

        Arguments
        ---------
        loss : torch.Tensor
            The training loss of the current micro-batch.

        Returns
        -------
        torch.Tensor
            ``loss``, or ``loss * nan`` (still attached to the graph).
        """
        if not self.forced_nonfinite:
            return loss
        epoch = int(getattr(self.hparams.epoch_counter, "current", 0))
        where = (distributed_rank(), epoch, int(self.step))
        if where not in self.forced_nonfinite:
            return loss
        logger.warning("debug_nonfinite_steps: NaN loss forced at (rank, epoch, step) %s", where)
        return loss * float("nan")

    def _reset_window(self):
        self._window_nonfinite = False
        self._window_clips = []
        self._window_micro_batches = 0

    def _ddp_wrapped(self):
        return any(
            isinstance(m, torch.nn.parallel.DistributedDataParallel)
            for m in self.modules.values()
        )

    def _ranks_with_nonfinite(self):
        """How many ranks met a non-finite loss in this window (one all-reduce under DDP)."""
        if not is_distributed_initialized():
            return int(self._window_nonfinite)
        flag = torch.tensor([int(self._window_nonfinite)], device=self.device)
        torch.distributed.all_reduce(flag)
        return int(flag.item())

    def _skip_nonfinite(self, bad_ranks):
        """Drops the accumulation window on this rank (every rank calls it at the same step)."""
        self.optimizer.zero_grad(set_to_none=True)
        self.consecutive_nonfinite += 1
        self.skipped_steps += 1
        patience = int(self.nonfinite_patience)
        world = torch.distributed.get_world_size() if is_distributed_initialized() else 1
        logger.warning(
            "Non-finite loss on %d of %d rank(s) in the accumulation window ending "
            "at epoch %s step %d: its %d micro-batch(es) are dropped on every rank, "
            "optimiser, lr and teacher untouched (%d in a row); this rank's "
            "non-finite clips: %s",
            bad_ranks,
            world,
            getattr(self.hparams.epoch_counter, "current", "?"),
            self.step,
            self._window_micro_batches,
            self.consecutive_nonfinite,
            self._window_clips[:8],
        )
        if self.consecutive_nonfinite >= patience:
            raise NonFiniteLossError(
                f"{self.consecutive_nonfinite} consecutive non-finite losses "
                f"(nonfinite_patience={patience}): stopping. Lower the lr, check "
                "the input normalisation, or resume from the last checkpoint."
            )

    # -------------------------------------------------------------- forward
    def mask_generator(self, stage):
        """A generator seeded by :func:`mask_seed` (seed, epoch, step, rank).

        On CUDA the generator (and so the masks) lives on the device: no host
        tensor is drawn and copied each step. The same seed on the same kind
        of device gives the same masks, so a resumed run continues exactly.

        Arguments
        ---------
        stage : speechbrain.Stage
            Training masks differ per rank and step; validation / test masks
            are fixed (same on every rank and every epoch).

        Returns
        -------
        torch.Generator
        """
        epoch = getattr(self.hparams.epoch_counter, "current", 0) or 0
        seed = mask_seed(self.hparams.seed, epoch, self.step, distributed_rank(), stage)
        device = torch.device(self.device)
        if device.type != "cuda":  # CPU masks; on CUDA drawn on the device (no copy)
            device = torch.device("cpu")
        return torch.Generator(device=device).manual_seed(seed)

    def draw_masks(self, batch_size, num_tokens, stage):
        """The ``num_masks`` masks of every clip of the current batch.

        Arguments
        ---------
        batch_size : int
            Clips ``B``.
        num_tokens : int
            Tokens per clip ``N``.
        stage : speechbrain.Stage
            Selects the seed (:meth:`mask_generator`).

        Returns
        -------
        visible, masked : torch.Tensor
            Sorted token indices ``[B, M, Nv]`` and ``[B, M, Nm]`` (on the
            generator's device), see :func:`aasp_sb.masking.multi_mask`.
        """
        return multi_mask(
            batch_size,
            num_tokens,
            int(self.hparams.num_masks),
            self.hparams.mask_ratio,
            generator=self.mask_generator(stage),
        )

    def input_features(self, batch):
        """Normalised log-mel of a batch of waveforms (``sig``) or of shard crops (``feats``).

        Crops from :class:`~aasp_sb.data.shards.LogMelShardDataset` are
        un-normalised log-mel computed with the same front end, so only the
        normalisation runs here.
        """
        if hasattr(batch, "feats"):
            feats = batch.feats.data if hasattr(batch.feats, "data") else batch.feats
            return self.modules.compute_features.normalize(feats.float())
        wavs, _ = batch.sig
        return self.modules.compute_features(wavs)

    def compute_forward(self, batch, stage):
        """Student (all masked views at once), teacher targets, clip embeddings."""
        batch = batch.to(self.device)
        feats = self.input_features(batch)
        hp = self.hparams
        num_tokens, _ = unwrap_module(self.modules.student).num_tokens(feats.shape[1])
        visible, masked = self.draw_masks(feats.shape[0], num_tokens, stage)
        visible, masked = visible.to(self.device), masked.to(self.device)
        student = self.modules.student(feats, visible, masked)
        out = {"student": student, "targets": self.teacher_targets(feats, masked)}
        if stage != sb.Stage.TRAIN:
            with torch.no_grad():
                encoded = hp.encoder(feats)
            out["clip_embedding"] = hp.encoder.clip_embedding(encoded)
        return out

    @torch.no_grad()
    def teacher_targets(self, feats, masked):
        """Layer-normalised teacher features at the masked positions ``[B*M, Nm, D]``.

        A :class:`~aasp_sb.lobes.teacher.MaskedTeacher` computes them in its own
        ``forward`` (what ``--compile`` compiles); a plain ``EMATeacher`` is
        run here with the ``teacher_input`` / ``target_layers`` keys.
        """
        teacher = self.modules.teacher
        if isinstance(unwrap_module(teacher), MaskedTeacher):
            return teacher(feats, masked)
        return masked_targets(
            teacher.module,
            feats,
            masked,
            self.hparams.teacher_input,
            int(getattr(self.hparams, "target_layers", 1)),
        )

    def compute_objectives(self, predictions, batch, stage):
        """Regression (2 - 2 cos) plus lambda x multi-mask contrastive."""
        hp = self.hparams
        student = predictions["student"]
        reg = regression_loss(student.pred.float(), predictions["targets"].float())
        loss = reg
        parts = {"regression": reg.detach()}
        weight = float(getattr(hp, "contrastive_weight", 0.0))
        if weight > 0:
            con = multi_positive_infonce(student.z, hp.tau)
            loss = reg + weight * con
            parts["contrastive"] = con.detach()
        parts["loss"] = loss.detach()
        self._accumulate(stage, parts)
        if stage != sb.Stage.TRAIN:
            self._keep_valid_embeddings(predictions["clip_embedding"])
        self._last_parts = parts
        return loss

    # ------------------------------------------------------------- logging
    def _accumulate(self, stage, parts):
        """Running sums of the finite loss parts, kept on the device (no sync per step)."""
        sums = self._stage_sums.setdefault(stage, {})
        for k, v in parts.items():
            v = v.detach().float()
            ok = torch.isfinite(v)
            total, count = sums.get(k, (0.0, 0))
            sums[k] = (total + torch.where(ok, v, torch.zeros_like(v)), count + ok.float())

    def _log_step(self, outputs, loss):
        interval = int(getattr(self.hparams, "log_interval", 0) or 0)
        if interval <= 0 or self.optimizer_step % interval or not sb.utils.distributed.if_main_process():
            return
        record = {
            "step": int(self.optimizer_step),
            "epoch": int(getattr(self.hparams.epoch_counter, "current", 0)),
            "lr": float(self.lr_scheduler.current_lr),
            "ema_decay": float(getattr(self, "ema_decay", 0.0)),
        }
        record.update({k: float(v) for k, v in self._last_parts.items()})
        now = time.perf_counter()
        last = getattr(self, "_last_log", None)
        if last is not None and now > last[0] and self.optimizer_step > last[1]:
            clips = (self.optimizer_step - last[1]) * self._clips_per_step()
            record["clips_per_s"] = round(clips / (now - last[0]), 3)
        self._last_log = (now, int(self.optimizer_step))
        path = os.path.join(self.hparams.output_folder, "metrics.jsonl")
        with open(path, "a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")
        writer = self._tensorboard_writer()
        if writer is not None:
            for key, value in record.items():
                if key not in ("step", "epoch"):
                    writer.add_scalar(f"step/{key}", value, record["step"])

    def _clips_per_step(self):
        """Clips one optimiser step consumes over all ranks."""
        world = torch.distributed.get_world_size() if is_distributed_initialized() else 1
        batch = int(getattr(self.hparams, "batch_size", 1) or 1)
        return batch * int(self.grad_accumulation_factor) * world

    def _tensorboard_writer(self):
        """The ``tensorboard_logger``'s writer (main process only), or None."""
        tb = getattr(self.hparams, "tensorboard_logger", None)
        return getattr(tb, "writer", None) if tb is not None else None

    def on_stage_start(self, stage, epoch=None):
        """Resets the per-stage running sums; sets the epoch of seeded crops."""
        super().on_stage_start(stage, epoch)
        self._stage_sums[stage] = {}
        if stage == sb.Stage.TRAIN:
            self._reset_window()
        if stage != sb.Stage.TRAIN:
            self._valid_embeddings = []

    def on_stage_end(self, stage, stage_loss, epoch=None):
        """Logs loss parts, lr, EMA decay and RankMe; checkpoints after validation."""
        sums = self._reduce_across_ranks(self._stage_sums.get(stage, {}))
        stats = {k: round(float(t) / max(float(c), 1.0), 5) for k, (t, c) in sums.items()}
        if "loss" not in stats:
            stats["loss"] = round(float(stage_loss), 5)
        if stage == sb.Stage.TRAIN:
            if getattr(self, "_window_nonfinite", False):
                logger.warning(
                    "Epoch %s ended inside an accumulation window with a non-finite "
                    "loss (%d micro-batch(es)); SpeechBrain discards an unfinished "
                    "window's gradients", epoch, self._window_micro_batches,
                )
            self._reset_window()
            self.train_stats = stats
            if not getattr(self, "has_valid", True):  # no validation: log and save now
                self._end_of_epoch(epoch, stats, None)
            return
        value = self._rankme_across_ranks(self._valid_embeddings)
        if value is not None:
            stats["rankme"] = round(value, 3)
        if stage == sb.Stage.VALID:
            self._end_of_epoch(epoch, self.train_stats, stats)
        elif hasattr(self.hparams, "train_logger"):
            self.hparams.train_logger.log_stats(
                stats_meta={"Epoch loaded": self.hparams.epoch_counter.current},
                test_stats=stats,
            )

    @staticmethod
    def _reduce_across_ranks(sums):
        """Adds up every rank's (sum, count) pairs so logged stats cover all the data."""
        if not is_distributed_initialized() or not sums:
            return sums
        keys = sorted(sums)
        device = next(
            (t.device for pair in sums.values() for t in pair if torch.is_tensor(t)),
            torch.device("cpu"),
        )
        flat = torch.tensor(
            [float(x) for k in keys for x in sums[k]], dtype=torch.float64, device=device
        )
        torch.distributed.all_reduce(flat)
        return {k: (flat[2 * i], flat[2 * i + 1]) for i, k in enumerate(keys)}

    def rankme_budget(self):
        """Validation clip embeddings each rank keeps for RankMe (``rankme_clips`` / ranks)."""
        total = int(getattr(self.hparams, "rankme_clips", 4096) or 0)
        world = torch.distributed.get_world_size() if is_distributed_initialized() else 1
        return max(1, -(-total // world)) if total > 0 else 0

    def _keep_valid_embeddings(self, emb):
        """Keeps this rank's first ``rankme_budget()`` validation embeddings (bounded memory)."""
        budget = self.rankme_budget()
        have = sum(len(t) for t in self._valid_embeddings)
        if have < budget:
            self._valid_embeddings.append(emb[: budget - have].detach().float())

    def _rankme_across_ranks(self, tensors):
        """RankMe of the kept embeddings of every rank, computed once (rank 0) and shared.

        The ranks' embeddings are gathered as tensors (padded to the largest
        count, with the counts alongside), never as pickled objects; only rank
        0 runs the SVD and the value is broadcast.
        """
        local = torch.cat(tensors) if tensors else None
        if not is_distributed_initialized():
            return float(rankme(local)) if local is not None and len(local) > 1 else None
        dist = torch.distributed
        device = torch.device(self.device) if dist.get_backend() == "nccl" else torch.device("cpu")
        dim = int(self.hparams.encoder.embed_dim)
        if local is None:
            local = torch.zeros(0, dim)
        local = local.to(device)
        count = torch.tensor([len(local)], device=device)
        counts = [torch.zeros_like(count) for _ in range(dist.get_world_size())]
        dist.all_gather(counts, count)
        most = int(max(int(c) for c in counts))
        padded = torch.zeros(most, dim, device=device)
        padded[: len(local)] = local
        parts = [torch.zeros_like(padded) for _ in counts]
        dist.all_gather(parts, padded)
        value = torch.full((1,), float("nan"), dtype=torch.float64, device=device)
        if dist.get_rank() == 0:
            rows = torch.cat([p[: int(c)] for p, c in zip(parts, counts)])
            if len(rows) > 1:
                value[0] = float(rankme(rows.float().cpu()))
        dist.broadcast(value, src=0)
        return None if torch.isnan(value).item() else float(value.item())

    def _end_of_epoch(self, epoch, train_stats, valid_stats):
        """Logs the epoch and saves a checkpoint (meta: validation stats, else training)."""
        epoch_stats = {
            "epoch": epoch,
            "lr": float(self.lr_scheduler.current_lr),
            "ema_decay": float(getattr(self, "ema_decay", 0.0)),
            "skipped_steps": int(self.skipped_steps),
        }
        if hasattr(self.hparams, "train_logger"):
            self.hparams.train_logger.log_stats(
                stats_meta=epoch_stats, train_stats=train_stats, valid_stats=valid_stats
            )
        self._write_epoch_record(epoch_stats, valid_stats or {})
        writer = self._tensorboard_writer()
        if writer is not None:  # x axis: the epoch, so a resumed run continues its curves
            for prefix, stats in (("train", train_stats), ("valid", valid_stats or {})):
                for key, value in stats.items():
                    writer.add_scalar(f"{prefix}/{key}", float(value), int(epoch))
            for key in ("lr", "ema_decay", "skipped_steps"):
                writer.add_scalar(f"epoch/{key}", float(epoch_stats[key]), int(epoch))
            writer.flush()
        if self.checkpointer is not None:
            meta = {k: float(v) for k, v in (valid_stats or train_stats).items()}
            # the last `keep_checkpoints` epochs (the loss falls, so the lowest are the latest)
            self.checkpointer.save_and_keep_only(
                meta=meta,
                min_keys=["loss"],
                num_to_keep=int(getattr(self.hparams, "keep_checkpoints", 2)),
            )

    def _write_epoch_record(self, epoch_stats, valid_stats):
        if not sb.utils.distributed.if_main_process():
            return
        record = dict(epoch_stats)
        record.update({f"train_{k}": v for k, v in getattr(self, "train_stats", {}).items()})
        record.update({f"valid_{k}": v for k, v in valid_stats.items()})
        path = os.path.join(self.hparams.output_folder, "epochs.jsonl")
        with open(path, "a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")
