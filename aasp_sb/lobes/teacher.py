"""EMA teacher and its decay schedule.

The teacher is an exponential moving average of the student (stem +
encoder), never trained by gradients and always in eval mode (M2D, BYOL,
data2vec). Two SpeechBrain traps are handled here (see DESIGN.md §7):

- ``Brain`` calls ``modules.train()`` every epoch, which would switch a
  plain copy back into dropout / stochastic-depth mode: :meth:`EMATeacher.train`
  always switches to eval instead;
- the default optimiser takes every parameter of ``modules``: the teacher's
  have ``requires_grad=False`` (and get no gradients), and parameter-group
  helpers such as :func:`aasp_sb.schedulers.param_groups` drop them.

The teacher is an ordinary ``nn.Module``, so SpeechBrain's ``Checkpointer``
saves and recovers it through its ``state_dict`` (keys ``module.*``).
"""

import copy
import math

import torch
from torch import nn


def unwrap_module(module):
    """Returns the module inside DDP / DataParallel / ``torch.compile`` wrappers.

    Arguments
    ---------
    module : torch.nn.Module
        Possibly wrapped module.

    Returns
    -------
    torch.nn.Module
        The innermost module.

    Example
    -------
    >>> lin = nn.Linear(2, 2)
    >>> unwrap_module(nn.DataParallel(lin)) is lin
    True
    """
    while True:
        if isinstance(
            module,
            (nn.parallel.DistributedDataParallel, nn.DataParallel),
        ):
            module = module.module
        elif hasattr(module, "_orig_mod"):
            module = module._orig_mod
        else:
            return module


class EMATeacher(nn.Module):
    """Exponential-moving-average copy of a student network.

    ``update(student, decay)`` sets every teacher parameter to
    ``decay * teacher + (1 - decay) * student`` and copies the student's
    buffers. The forward pass runs the copy under ``torch.no_grad()``; other
    methods of the copy are reachable as ``teacher.module.<method>`` (wrap
    those calls in ``torch.no_grad()`` yourself).

    Arguments
    ---------
    student : torch.nn.Module
        Network to copy (deep copy; the student is not modified).

    Example
    -------
    >>> student = nn.Sequential(nn.Linear(4, 4), nn.Dropout(0.5))
    >>> teacher = EMATeacher(student)
    >>> _ = teacher.train()
    >>> teacher.training, teacher.module[1].training
    (False, False)
    >>> any(p.requires_grad for p in teacher.parameters())
    False
    >>> teacher.update(student, 0.99)
    >>> teacher(torch.randn(2, 4)).shape
    torch.Size([2, 4])
    """

    def __init__(self, student):
        super().__init__()
        self.module = copy.deepcopy(unwrap_module(student))
        for p in self.module.parameters():
            p.requires_grad_(False)
            p.grad = None
        self.train()

    def train(self, mode=True):
        """Keeps the teacher in eval mode whatever ``mode`` says.

        Arguments
        ---------
        mode : bool
            Ignored (SpeechBrain calls ``modules.train()`` every epoch).

        Returns
        -------
        EMATeacher
            ``self``, in eval mode.
        """
        del mode
        return super().train(False)

    def forward(self, *args, **kwargs):
        """Runs the teacher copy without building a graph.

        Arguments
        ---------
        *args : tuple
            Positional inputs of the wrapped module.
        **kwargs : dict
            Keyword inputs of the wrapped module.

        Returns
        -------
        Any
            Whatever the wrapped module returns.
        """
        with torch.no_grad():
            return self.module(*args, **kwargs)

    @torch.no_grad()
    def update(self, student, decay):
        """One EMA step: ``t <- decay * t + (1 - decay) * s``; buffers copied.

        Arguments
        ---------
        student : torch.nn.Module
            The student (possibly DDP-wrapped); same architecture as the copy.
        decay : float
            EMA decay in [0, 1] (1 keeps the teacher unchanged).
        """
        decay = float(decay)
        if not 0.0 <= decay <= 1.0:
            raise ValueError(f"decay must be in [0, 1], got {decay}")
        student = unwrap_module(student)
        t_params = list(self.module.parameters())
        s_params = list(student.parameters())
        if len(t_params) != len(s_params):
            raise ValueError(
                f"student has {len(s_params)} parameter tensors, the teacher "
                f"{len(t_params)}: not the architecture the teacher was copied from"
            )
        if t_params and decay < 1.0:
            s_params = [s.detach() for s in s_params]
            # t + (1 - decay) * (s - t) == decay * t + (1 - decay) * s, one pass
            torch._foreach_lerp_(t_params, s_params, 1.0 - decay)
        t_bufs = list(self.module.buffers())
        s_bufs = list(student.buffers())
        if len(t_bufs) != len(s_bufs):
            raise ValueError(
                f"student has {len(s_bufs)} buffers, the teacher {len(t_bufs)}"
            )
        if t_bufs:
            torch._foreach_copy_(t_bufs, [b.detach() for b in s_bufs])


class EMASchedule:
    """EMA decay as a function of the optimiser step.

    ``decay(step)`` goes from ``start`` at step 0 to ``end`` at
    ``total_steps`` (linearly, or along a half cosine as in BYOL) and stays at
    ``end`` afterwards. Stateless: pass the global optimiser step.

    Arguments
    ---------
    start : float
        Decay at step 0.
    end : float
        Decay from ``total_steps`` on.
    total_steps : int
        Length of the ramp (required, at least 1).
    mode : str
        ``"linear"`` or ``"cosine"``.

    Example
    -------
    >>> sched = EMASchedule(0.99, 0.999, total_steps=100)
    >>> sched(0), round(sched(50), 6), sched(100), sched(10**6)
    (0.99, 0.9945, 0.999, 0.999)
    """

    def __init__(
        self, start=0.9995, end=0.99999, total_steps=None, mode="linear"
    ):
        if total_steps is None or int(total_steps) < 1:
            raise ValueError(
                f"total_steps must be a positive integer, got {total_steps}"
            )
        if mode not in ("linear", "cosine"):
            raise ValueError(f"mode must be 'linear' or 'cosine', got {mode!r}")
        for name, value in (("start", start), ("end", end)):
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {value}")
        self.start = float(start)
        self.end = float(end)
        self.total_steps = int(total_steps)
        self.mode = mode

    def __call__(self, step):
        """Decay at ``step`` (clamped to ``[0, total_steps]``).

        Arguments
        ---------
        step : int
            Global optimiser step.

        Returns
        -------
        float
            The EMA decay.
        """
        progress = min(max(float(step) / self.total_steps, 0.0), 1.0)
        if progress >= 1.0:
            return self.end
        if self.mode == "cosine":
            progress = 0.5 * (1.0 - math.cos(math.pi * progress))
        return self.start + (self.end - self.start) * progress

    decay = __call__
