"""Learning-rate schedule, parameter groups and gradient clipping.

SpeechBrain 1.1.2's schedulers write one learning rate into every parameter
group and ``Brain`` clips only the first group's gradients (DESIGN.md §7),
which breaks weight-decay splits and layer-wise lr decay. This module
provides the three pieces that keep groups apart:

- :func:`param_groups`: weight decay only on matrices (not on biases, norms,
  position embeddings, tokens, gates), frozen parameters excluded, optional
  layer-wise lr decay stored as each group's ``lr_scale``;
- :class:`WarmupCosine`: per-step linear warm-up then cosine annealing that
  sets ``lr = base_lr * lr_scale * factor(step)`` in every group separately,
  checkpointable by SpeechBrain's ``Checkpointer``;
- :func:`clip_grad_norm_all`: clipping over all groups.
"""

import math
import re

import torch
from speechbrain.utils.checkpoints import (
    mark_as_loader,
    mark_as_saver,
    register_checkpoint_hooks,
)

# Parameter-name components that never get weight decay (besides every
# tensor with fewer than 2 dimensions: biases, norm scales, 1-D gates).
NO_DECAY_NAMES = (
    "subband_embed",
    "log_gain",
    "pos_embed",
    "pos_embedding",
    "mask_token",
    "cls_token",
    "gate",
    "gates",
)

# Name components of the patch stem / positions (layer id 0).
STEM_NAMES = ("pos", "cls_token", "mask_token")
STEM_PREFIXES = ("patch", "stem", "aape", "pos_")
BLOCK_CONTAINERS = ("blocks", "layers")

_BLOCK_RE = re.compile(r"(?:^|\.)(?:blocks|layers)\.(\d+)(?:\.|$)")


def default_layer_id(name, num_layers):
    """Layer id of a parameter for layer-wise lr decay (BEiT / MAE rule).

    ``...blocks.i...`` (or ``layers.i``) -> ``i + 1``; patch stem, AaPE and
    position embeddings (a name component ``patch*``, ``stem*``, ``aape*``,
    ``pos``, ``pos_*``, ``cls_token``, ``mask_token``) -> 0; anything else
    (final norm, head) -> ``num_layers + 1``.

    Arguments
    ---------
    name : str
        Parameter name as given by ``named_parameters()``.
    num_layers : int
        Number of transformer blocks.

    Returns
    -------
    int
        Layer id in ``[0, num_layers + 1]``.

    Example
    -------
    >>> default_layer_id("encoder.blocks.3.attn.q.weight", 12)
    4
    >>> default_layer_id("encoder.patch_embed.proj.weight", 12)
    0
    >>> default_layer_id("head.weight", 12)
    13
    """
    parts = name.split(".")
    for i, part in enumerate(parts[:-1]):
        if part in BLOCK_CONTAINERS and parts[i + 1].isdigit():
            return int(parts[i + 1]) + 1
    for part in parts:
        if part in STEM_NAMES or part.startswith(STEM_PREFIXES):
            return 0
    return num_layers + 1


def infer_num_layers(names):
    """Number of blocks implied by names like ``blocks.<i>.`` (max i + 1).

    Arguments
    ---------
    names : iterable of str
        Parameter names.

    Returns
    -------
    int or None
        ``max(i) + 1``, or None when no name has a block index.

    Example
    -------
    >>> infer_num_layers(["blocks.0.w", "blocks.11.w", "head.w"])
    12
    """
    ids = [int(m.group(1)) for m in map(_BLOCK_RE.search, names) if m]
    return max(ids) + 1 if ids else None


def _no_decay(name, param, no_decay_names):
    if param.ndim < 2:
        return True
    return any(part in no_decay_names for part in name.split("."))


def param_groups(
    model,
    weight_decay,
    lr=None,
    layer_decay=None,
    num_layers=None,
    layer_id_fn=None,
    no_decay_names=NO_DECAY_NAMES,
):
    """Optimiser parameter groups with a weight-decay split and layer decay.

    Weight decay goes only to trainable tensors with ``ndim >= 2`` whose name
    has no component in ``no_decay_names``; biases and norm weights (1-D),
    position embeddings, tokens and gates get none. Parameters with
    ``requires_grad=False`` (e.g. an EMA teacher) are excluded.

    With ``layer_decay``, parameters are further split by layer id and each
    group gets ``lr_scale = layer_decay ** (num_layers + 1 - layer_id)``.
    The scale is **not** folded into ``lr``: :class:`WarmupCosine` applies it
    (``lr = base_lr * lr_scale * factor``); use it (or multiply yourself)
    when you use ``layer_decay``.

    Arguments
    ---------
    model : torch.nn.Module
        Model whose ``named_parameters()`` are grouped.
    weight_decay : float
        Decay for the decayed groups (the others get 0).
    lr : float, optional
        If given, stored as every group's ``lr``.
    layer_decay : float, optional
        Layer-wise lr decay factor (e.g. 0.75); None disables it.
    num_layers : int, optional
        Number of transformer blocks; inferred from ``blocks.<i>.`` names when
        None.
    layer_id_fn : callable, optional
        ``fn(name, num_layers) -> int`` in ``[0, num_layers + 1]``; defaults
        to :func:`default_layer_id`.
    no_decay_names : tuple of str
        Name components (between dots) excluded from weight decay.

    Returns
    -------
    list of dict
        Groups with ``params``, ``weight_decay``, ``group_name`` and, when
        requested, ``lr`` and ``lr_scale``; empty groups are dropped.

    Example
    -------
    >>> model = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.LayerNorm(4))
    >>> groups = param_groups(model, weight_decay=0.05)
    >>> [(g["group_name"], len(g["params"]), g["weight_decay"]) for g in groups]
    [('decay', 1, 0.05), ('no_decay', 3, 0.0)]
    """
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    if layer_decay is not None:
        if num_layers is None:
            num_layers = infer_num_layers(n for n, _ in named)
        if num_layers is None:
            raise ValueError(
                "layer_decay needs num_layers (none could be inferred from "
                "'blocks.<i>.' parameter names)"
            )
        layer_id_fn = layer_id_fn or default_layer_id
    groups = {}
    for name, param in named:
        decay = not _no_decay(name, param, no_decay_names)
        layer_id = (
            None if layer_decay is None else int(layer_id_fn(name, num_layers))
        )
        key = (layer_id if layer_id is not None else 0, not decay)
        group = groups.get(key)
        if group is None:
            suffix = "decay" if decay else "no_decay"
            group = {
                "params": [],
                "weight_decay": float(weight_decay) if decay else 0.0,
                "group_name": (
                    suffix if layer_id is None else f"layer{layer_id}_{suffix}"
                ),
            }
            if lr is not None:
                group["lr"] = float(lr)
            if layer_id is not None:
                group["lr_scale"] = float(
                    layer_decay ** (num_layers + 1 - layer_id)
                )
            groups[key] = group
        group["params"].append(param)
    return [groups[k] for k in sorted(groups)]


@register_checkpoint_hooks
class WarmupCosine:
    """Per-step linear warm-up then cosine annealing, group by group.

    At construction (or :meth:`attach`) each parameter group's current
    ``lr`` is stored as ``group["base_lr"]`` (kept if already there, e.g.
    restored from an optimiser checkpoint). The lr of update ``k``
    (0-based) is ``base_lr * lr_scale * factor(k)`` with the group's optional
    ``lr_scale`` (default 1) and::

        factor(k) = (k + 1) / warmup_steps                       k < warmup
        factor(k) = r + (1 - r) * (1 + cos(pi * p)) / 2          otherwise
        p = clamp((k - warmup_steps) / (total_steps - warmup_steps), 0, 1)

    with ``r = min_lr_ratio``; so the first update never has lr 0 and the lr
    stays at ``r * base_lr * lr_scale`` from ``total_steps`` on.

    Two equivalent ways to drive it (``n_steps`` counts updates either way):

    - PyTorch style: build it with the optimiser, call :meth:`step` after
      every ``optimizer.step()``;
    - SpeechBrain style: ``scheduler(optimizer)`` **before** every update
      (e.g. in ``on_fit_batch_start`` when ``should_step``); it attaches on
      the first call and returns ``(old_lr, new_lr)``.

    It is a SpeechBrain checkpointer recoverable (saves ``n_steps``).

    Arguments
    ---------
    optimizer : torch.optim.Optimizer or None
        Optimiser to drive; None to attach later (YAML: the optimiser does not
        exist yet when hparams are loaded).
    warmup_steps : int
        Linear warm-up length in updates (0 disables warm-up).
    total_steps : int
        Update at which the cosine reaches ``min_lr_ratio``.
    min_lr_ratio : float
        Final lr as a fraction of the peak lr.

    Example
    -------
    >>> model = torch.nn.Linear(2, 2)
    >>> opt = torch.optim.SGD(model.parameters(), lr=1.0)
    >>> sched = WarmupCosine(opt, warmup_steps=2, total_steps=4)
    >>> lrs = [sched.current_lr]
    >>> for _ in range(5):
    ...     sched.step()
    ...     lrs.append(round(sched.current_lr, 3))
    >>> lrs
    [0.5, 1.0, 1.0, 0.5, 0.0, 0.0]
    """

    def __init__(self, optimizer, warmup_steps, total_steps, min_lr_ratio=0.0):
        warmup_steps, total_steps = int(warmup_steps), int(total_steps)
        if total_steps < 1:
            raise ValueError(f"total_steps must be >= 1, got {total_steps}")
        if not 0 <= warmup_steps <= total_steps:
            raise ValueError(
                f"warmup_steps must be in [0, total_steps={total_steps}], "
                f"got {warmup_steps}"
            )
        if not 0.0 <= min_lr_ratio <= 1.0:
            raise ValueError(
                f"min_lr_ratio must be in [0, 1], got {min_lr_ratio}"
            )
        self.warmup_steps = warmup_steps
        self.total_steps = total_steps
        self.min_lr_ratio = float(min_lr_ratio)
        self.n_steps = 0
        self.optimizer = None
        if optimizer is not None:
            self.attach(optimizer)

    def factor(self, step):
        """Schedule multiplier for the 0-based update ``step``.

        Arguments
        ---------
        step : int
            Update index.

        Returns
        -------
        float
            Multiplier of ``base_lr * lr_scale``.
        """
        if step < self.warmup_steps:
            return (step + 1) / self.warmup_steps
        span = max(1, self.total_steps - self.warmup_steps)
        progress = min(max((step - self.warmup_steps) / span, 0.0), 1.0)
        r = self.min_lr_ratio
        return r + (1.0 - r) * 0.5 * (1.0 + math.cos(math.pi * progress))

    def attach(self, optimizer):
        """Binds an optimiser: stores base lrs and sets the current lr.

        Arguments
        ---------
        optimizer : torch.optim.Optimizer
            Optimiser whose groups to drive.
        """
        for group in optimizer.param_groups:
            group.setdefault("base_lr", float(group["lr"]))
        self.optimizer = optimizer
        self._apply()

    def _apply(self):
        if self.optimizer is None:
            return
        f = self.factor(self.n_steps)
        for group in self.optimizer.param_groups:
            group["lr"] = group["base_lr"] * group.get("lr_scale", 1.0) * f

    @property
    def current_lr(self):
        """Largest group lr now (the nominal lr; None before attaching)."""
        if self.optimizer is None:
            return None
        return float(max(g["lr"] for g in self.optimizer.param_groups))

    @property
    def group_lrs(self):
        """List of every group's current lr (empty before attaching)."""
        if self.optimizer is None:
            return []
        return [float(g["lr"]) for g in self.optimizer.param_groups]

    def step(self):
        """Counts one finished update and sets the lr of the next one."""
        self.n_steps += 1
        self._apply()

    def __call__(self, optimizer=None):
        """Sets the lr of the update about to be made, then counts it.

        Arguments
        ---------
        optimizer : torch.optim.Optimizer, optional
            Attached on first use (or when a different one is passed).

        Returns
        -------
        old_lr : float or None
            :attr:`current_lr` before the call.
        new_lr : float
            :attr:`current_lr` for this update.
        """
        old_lr = self.current_lr
        if optimizer is not None and optimizer is not self.optimizer:
            self.attach(optimizer)
        else:
            self._apply()
        self.n_steps += 1
        return old_lr, self.current_lr

    def state_dict(self):
        """Plain-python state (``n_steps`` and the schedule's settings)."""
        return {
            "n_steps": int(self.n_steps),
            "warmup_steps": int(self.warmup_steps),
            "total_steps": int(self.total_steps),
            "min_lr_ratio": float(self.min_lr_ratio),
        }

    def load_state_dict(self, state):
        """Restores ``n_steps`` (settings come from the configuration).

        Arguments
        ---------
        state : dict
            As returned by :meth:`state_dict`.
        """
        self.n_steps = int(state["n_steps"])
        self._apply()

    @mark_as_saver
    def save(self, path):
        """Saves the state with ``torch.save`` (plain python values).

        Arguments
        ---------
        path : str or pathlib.Path
            Destination file.
        """
        torch.save(self.state_dict(), path)

    @mark_as_loader
    def load(self, path, end_of_epoch=False):
        """Loads a state saved by :meth:`save` (``weights_only=True``).

        Arguments
        ---------
        path : str or pathlib.Path
            Source file.
        end_of_epoch : bool
            Unused (SpeechBrain's loader signature).
        """
        del end_of_epoch
        self.load_state_dict(torch.load(path, weights_only=True))


def clip_grad_norm_all(optimizer, max_norm, norm_type=2.0):
    """Clips the gradients of every parameter group together.

    With AMP, unscale first (``scaler.unscale_(optimizer)``), as SpeechBrain's
    ``Brain.optimizers_step`` does before clipping.

    Arguments
    ---------
    optimizer : torch.optim.Optimizer
        Optimiser whose groups' gradients are clipped.
    max_norm : float
        Maximum total norm.
    norm_type : float
        Norm order.

    Returns
    -------
    torch.Tensor
        Total gradient norm before clipping (0 when no gradients).

    Example
    -------
    >>> a, b = torch.nn.Parameter(torch.zeros(3)), torch.nn.Parameter(torch.zeros(4))
    >>> opt = torch.optim.SGD([{"params": [a]}, {"params": [b]}], lr=0.1)
    >>> a.grad, b.grad = torch.full((3,), 2.0), torch.full((4,), 2.0)
    >>> round(clip_grad_norm_all(opt, 1.0).item(), 4)
    5.2915
    >>> round(torch.cat([a.grad, b.grad]).norm().item(), 4)
    1.0
    """
    seen, params = set(), []
    for group in optimizer.param_groups:
        for p in group["params"]:
            if p.grad is not None and id(p) not in seen:
                seen.add(id(p))
                params.append(p)
    if not params:
        return torch.zeros(())
    return torch.nn.utils.clip_grad_norm_(params, max_norm, norm_type=norm_type)
