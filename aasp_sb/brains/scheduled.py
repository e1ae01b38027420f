"""A ``Brain`` base with per-step warm-up + cosine lr over several param groups.

SpeechBrain 1.1.2's ``Brain`` clips gradients of the first parameter group
only, and its schedulers write one lr into every group (which breaks
layer-wise lr decay). :class:`ScheduledBrain` fixes both for its subclasses
(:class:`~aasp_sb.brains.pretrain.AaSPBrain`,
:class:`~aasp_sb.brains.finetune.FinetuneBrain`):

- :meth:`fit` builds the training loader first so the schedule knows the
  number of optimiser steps per epoch;
- :meth:`build_optimizer` creates the optimiser from parameter groups and a
  :class:`~aasp_sb.schedulers.WarmupCosine` that honours each group's
  ``lr_scale``, both registered with the checkpointer;
- :meth:`optimizers_step` clips over all groups, steps, advances the
  schedule, then calls :meth:`after_optimizer_step` (e.g. the EMA update).
"""

import logging

import speechbrain as sb
from torch.utils.data import DataLoader

from aasp_sb.schedulers import WarmupCosine, clip_grad_norm_all

logger = logging.getLogger(__name__)


class ScheduledBrain(sb.Brain):
    """``sb.Brain`` with all-group clipping and a per-group warm-up + cosine lr.

    Subclasses call :meth:`build_optimizer` from ``init_optimizers``.

    Example
    -------
    >>> import torch
    >>> from speechbrain.utils.epoch_loop import EpochCounter
    >>> from aasp_sb.schedulers import param_groups
    >>> class Regress(ScheduledBrain):
    ...     def init_optimizers(self):
    ...         self.build_optimizer(param_groups(self.modules, 0.0), warmup_epochs=1)
    ...     def compute_forward(self, batch, stage):
    ...         return self.modules.lin(batch[0])
    ...     def compute_objectives(self, pred, batch, stage):
    ...         return ((pred - batch[1]) ** 2).mean()
    >>> brain = Regress({"lin": torch.nn.Linear(2, 1)}, torch.optim.SGD,
    ...                 {"number_of_epochs": 2}, run_opts={"noprogressbar": True})
    >>> data = [(torch.randn(2), torch.randn(1)) for _ in range(4)]
    >>> brain.fit(EpochCounter(2), data, train_loader_kwargs={"batch_size": 2})
    >>> brain.steps_per_epoch, brain.optimizer_step, brain.lr_scheduler.current_lr
    (2, 4, 0.0)
    """

    def fit(
        self,
        epoch_counter,
        train_set,
        valid_set=None,
        progressbar=None,
        train_loader_kwargs=None,
        valid_loader_kwargs=None,
    ):
        """Builds the train loader first so the schedule knows the steps per epoch.

        Arguments are those of :meth:`speechbrain.core.Brain.fit`.
        """
        train_loader_kwargs = train_loader_kwargs or {}
        valid_loader_kwargs = valid_loader_kwargs or {}
        if not isinstance(train_set, DataLoader):
            train_set = self.make_dataloader(
                train_set, stage=sb.Stage.TRAIN, **train_loader_kwargs
            )
        batches = len(train_set)
        if self.debug:
            batches = min(batches, self.debug_batches)
        self.train_loader = train_set
        self.has_valid = valid_set is not None
        # SpeechBrain steps on full accumulation windows only (an unfinished
        # trailing window is discarded at the end of the epoch)
        self.steps_per_epoch = max(
            1, batches // self.grad_accumulation_factor
        )
        return super().fit(
            epoch_counter,
            train_set,
            valid_set,
            progressbar,
            train_loader_kwargs,
            valid_loader_kwargs,
        )

    @property
    def total_steps(self):
        """Optimiser steps of the whole run."""
        steps = getattr(self, "steps_per_epoch", 1)
        return max(1, steps * int(self.hparams.number_of_epochs))

    def build_optimizer(self, groups, warmup_epochs=0.0, min_lr_ratio=0.0):
        """Creates ``self.optimizer`` and ``self.lr_scheduler`` and registers them.

        Arguments
        ---------
        groups : list of dict
            Parameter groups (see :func:`aasp_sb.schedulers.param_groups`).
        warmup_epochs : float
            Linear warm-up length in epochs.
        min_lr_ratio : float
            Final lr as a fraction of the peak.
        """
        self.optimizer = self.opt_class(groups)
        self.optimizers_dict = {"optimizer": self.optimizer}
        total = self.total_steps
        warmup = int(round(float(warmup_epochs) * getattr(self, "steps_per_epoch", 1)))
        if warmup > total - 1 and float(warmup_epochs) > 0:
            logger.warning(
                "warmup_epochs=%s is longer than the run (number_of_epochs=%s, "
                "%d optimiser steps): the warm-up is cut to %d steps and the lr "
                "never reaches its peak schedule; lower warmup_epochs",
                warmup_epochs, getattr(self.hparams, "number_of_epochs", "?"),
                total, max(0, total - 1),
            )
        self.lr_scheduler = WarmupCosine(
            self.optimizer,
            warmup_steps=max(0, min(warmup, total - 1)),
            total_steps=total,
            min_lr_ratio=float(min_lr_ratio),
        )
        if self.checkpointer is not None:
            for name, obj in (
                ("optimizer", self.optimizer),
                ("lr_scheduler", self.lr_scheduler),
            ):
                self.checkpointer.recoverables.pop(name, None)
                self.checkpointer.add_recoverable(name, obj)

    def optimizers_step(self):
        """Unscales, clips over all groups, steps, advances the lr schedule."""
        self.scaler.unscale_(self.optimizer)
        max_norm = getattr(self, "max_grad_norm", 0) or 0
        if max_norm > 0:
            clip_grad_norm_all(self.optimizer, max_norm)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        self.optimizer_step += 1
        self.lr_scheduler.step()
        self.after_optimizer_step()

    def after_optimizer_step(self):
        """Hook run after every optimiser step (nothing by default)."""

    def on_stage_start(self, stage, epoch=None):
        """Sets the epoch of seeded random crops (datasets with ``set_epoch``)."""
        if stage == sb.Stage.TRAIN and epoch is not None:
            dataset = getattr(getattr(self, "train_loader", None), "dataset", None)
            set_epoch = getattr(dataset, "set_epoch", None)
            if set_epoch is not None:
                set_epoch(epoch)
