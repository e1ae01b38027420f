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

:class:`MaskedTeacher` is the pre-training teacher: its ``forward`` computes
the regression targets itself, so ``--compile`` (which compiles each module's
``forward``) and DDP-style wrappers cover the teacher's whole pass.
"""

import copy
import math

import torch
from torch import nn

from aasp_sb.losses import layer_norm_targets
from aasp_sb.masking import gather_tokens

TEACHER_INPUTS = ("masked", "full")


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


def masked_targets(encoder, feats, masked, teacher_input="masked", top_k=1):
    """Layer-normalised encoder features at the masked positions.

    Arguments
    ---------
    encoder : AudioViT
        The (teacher) encoder.
    feats : torch.Tensor
        ``[B, T, F]`` normalised log-mel.
    masked : torch.Tensor
        ``[B, M, Nm]`` masked token indices per view.
    teacher_input : str
        ``"masked"``: encode only each view's masked tokens (M2D: the
        teacher never sees what the student sees); ``"full"``: encode all
        tokens once per clip and gather every view's targets from it.
    top_k : int
        Average of the top-k layers' outputs (1: the final output).

    Returns
    -------
    torch.Tensor
        ``[B*M, Nm, D]`` targets.

    Example
    -------
    >>> from aasp_sb.lobes.aape import make_stem
    >>> from aasp_sb.lobes.encoder import AudioViT
    >>> from aasp_sb.masking import multi_mask
    >>> enc = AudioViT(make_stem(False, embed_dim=32), 32, 2, 4, max_frames=64)
    >>> _, masked = multi_mask(2, 20, 3, 0.7)
    >>> masked_targets(enc, torch.randn(2, 64, 80), masked, "full", top_k=2).shape
    torch.Size([6, 14, 32])
    """
    if teacher_input not in TEACHER_INPUTS:
        raise ValueError(
            f"teacher_input must be one of {TEACHER_INPUTS}, got {teacher_input!r}"
        )
    tokens, _, _ = encoder.embed(feats)
    if teacher_input == "masked":
        tokens = gather_tokens(tokens, masked)
    out, layers = encoder.encode(tokens, return_layers=top_k > 1)
    targets = layer_norm_targets(layers if top_k > 1 else out, top_k)
    return targets if teacher_input == "masked" else gather_tokens(targets, masked)


class MaskedTeacher(EMATeacher):
    """EMA teacher of an encoder whose ``forward`` returns masked-token targets.

    Same state (keys ``module.*``) and EMA update as :class:`EMATeacher`;
    ``forward(feats, masked)`` runs :func:`masked_targets` on the copy without
    building a graph, so compiling the module compiles the teacher's pass.

    Arguments
    ---------
    student : AudioViT
        The student encoder to copy.
    teacher_input : str
        ``"masked"`` or ``"full"`` (see :func:`masked_targets`).
    target_layers : int
        Number of top layers averaged into the targets.

    Example
    -------
    >>> from aasp_sb.lobes.aape import make_stem
    >>> from aasp_sb.lobes.encoder import AudioViT
    >>> from aasp_sb.masking import multi_mask
    >>> enc = AudioViT(make_stem(True, embed_dim=32, num_modes=4), 32, 1, 4, max_frames=64)
    >>> teacher = MaskedTeacher(enc, teacher_input="masked")
    >>> _, masked = multi_mask(2, 20, 3, 0.7)
    >>> teacher(torch.randn(2, 64, 80), masked).shape
    torch.Size([6, 14, 32])
    """

    def __init__(self, student, teacher_input="masked", target_layers=1):
        if teacher_input not in TEACHER_INPUTS:
            raise ValueError(
                f"teacher_input must be one of {TEACHER_INPUTS}, got {teacher_input!r}"
            )
        depth = getattr(unwrap_module(student), "depth", None)
        if int(target_layers) < 1 or (depth is not None and int(target_layers) > depth):
            raise ValueError(
                f"target_layers must be in [1, {depth}], got {target_layers}"
            )
        super().__init__(student)
        self.teacher_input = teacher_input
        self.target_layers = int(target_layers)

    def forward(self, feats, masked):
        """Targets ``[B*M, Nm, D]`` for the ``[B, M, Nm]`` masked indices.

        Arguments
        ---------
        feats : torch.Tensor
            ``[B, T, F]`` normalised log-mel.
        masked : torch.Tensor
            ``[B, M, Nm]`` masked token indices per view.

        Returns
        -------
        torch.Tensor
            Layer-normalised teacher features at the masked positions.
        """
        with torch.no_grad():
            return masked_targets(
                self.module, feats, masked, self.teacher_input, self.target_layers
            )


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
