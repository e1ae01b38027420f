"""The trainable side of AaSP pre-training in one module (stem + encoder + predictor + head).

Running the whole student computation through one ``forward`` matters under
DistributedDataParallel: DDP synchronises gradients for what runs through the
wrapped module's ``forward``, so calling ``encoder.embed`` / ``encoder.encode``
on a wrapped encoder would bypass it. The parts stay separate modules (and
separate checkpoint files); this class only holds references to them.
"""

from typing import NamedTuple

import torch
from torch import nn

from aasp_sb.masking import gather_tokens

STEM_INPUTS = ("view", "clip")


class StudentOutput(NamedTuple):
    """What :class:`MaskedStudent` returns.

    pred: ``[B*M, Nm, D_t]`` predictions of the masked tokens' targets.
    pooled: ``[B, M, D]`` mean of each view's student outputs.
    z: ``[B, M, d]`` L2-normalised contrastive projections (None without a head).
    """

    pred: torch.Tensor
    pooled: torch.Tensor
    z: torch.Tensor = None


class MaskedStudent(nn.Module):
    """Encodes the visible tokens of every view and predicts the masked ones.

    Arguments
    ---------
    encoder : AudioViT
        The student encoder.
    predictor : CrossAttentionPredictor
        Predicts masked tokens from the visible ones.
    contrastive_head : torch.nn.Module, optional
        Projection for the multi-mask contrastive loss.
    use_contrastive_head : bool
        False keeps the head (checkpoints stay alike) but never runs it and
        freezes its parameters, so a run without the contrastive term
        (``contrastive_weight: 0``) neither pays for the projection nor leaves
        DDP with parameters that get no gradient.
    stem_input : str
        ``"view"`` (default): each view's stem input holds only its visible
        patches. ``"clip"``: the stem sees the whole clip (leaks masked
        content through AaPE; ablation only).

    Example
    -------
    >>> from aasp_sb.lobes.aape import make_stem
    >>> from aasp_sb.lobes.encoder import AudioViT
    >>> from aasp_sb.lobes.predictor import CrossAttentionPredictor
    >>> from aasp_sb.losses import ContrastiveHead
    >>> from aasp_sb.masking import multi_mask
    >>> enc = AudioViT(make_stem(True, embed_dim=32, num_modes=4), 32, 1, 4, max_frames=64)
    >>> student = MaskedStudent(enc, CrossAttentionPredictor(32, 32, 1, 4), ContrastiveHead(32, 16))
    >>> vis, msk = multi_mask(2, 20, 3, 0.7)
    >>> out = student(torch.randn(2, 64, 80), vis, msk)
    >>> out.pred.shape, out.pooled.shape, out.z.shape
    (torch.Size([6, 14, 32]), torch.Size([2, 3, 32]), torch.Size([2, 3, 16]))
    >>> head = ContrastiveHead(32, 16)
    >>> off = MaskedStudent(enc, CrossAttentionPredictor(32, 32, 1, 4), head, False)
    >>> off(torch.randn(2, 64, 80), vis, msk).z is None, head.fc1.weight.requires_grad
    (True, False)
    """

    def __init__(
        self,
        encoder,
        predictor,
        contrastive_head=None,
        use_contrastive_head=True,
        stem_input="view",
    ):
        super().__init__()
        if stem_input not in STEM_INPUTS:
            raise ValueError(
                f"student_stem_input must be one of {STEM_INPUTS}, got {stem_input!r}"
            )
        self.stem_input = stem_input
        self.encoder = encoder
        self.predictor = predictor
        self.contrastive_head = contrastive_head
        self.use_contrastive_head = bool(use_contrastive_head) and (
            contrastive_head is not None
        )
        if contrastive_head is not None and not self.use_contrastive_head:
            contrastive_head.requires_grad_(False)

    def num_tokens(self, num_frames):
        """Tokens per clip for ``num_frames`` input frames, and the grid."""
        grid = self.encoder.stem.grid(num_frames)
        return grid[0] * grid[1], grid

    def visible_tokens(self, feats, visible):
        """Stem tokens (with positions) of every view's visible patches ``[B*M, Nv, D]``."""
        if self.stem_input == "clip":  # leaks masked content through AaPE (ablation)
            tokens, _, _ = self.encoder.embed(feats)
            return gather_tokens(tokens, visible)
        stem = self.encoder.stem
        tokens = stem.forward_views(feats, visible)
        pos = self.encoder.positions(stem.grid(feats.shape[1]))
        return tokens + pos[visible.flatten(0, 1)].to(tokens.dtype)

    def forward(self, feats, visible, masked):
        """Runs the student on all views.

        Arguments
        ---------
        feats : torch.Tensor
            ``[B, T, F]`` normalised log-mel (full crops, no padding).
        visible : torch.Tensor
            ``[B, M, Nv]`` visible token indices per view.
        masked : torch.Tensor
            ``[B, M, Nm]`` masked token indices per view.

        Returns
        -------
        StudentOutput
        """
        B, M = visible.shape[:2]
        context, _ = self.encoder.encode(self.visible_tokens(feats, visible))
        grid = self.encoder.stem.grid(feats.shape[1])
        pred = self.predictor(
            context, visible.flatten(0, 1), masked.flatten(0, 1), grid
        )
        pooled = context.mean(dim=1).view(B, M, -1)
        z = None
        if self.use_contrastive_head:
            z = self.contrastive_head(pooled.float())
        return StudentOutput(pred, pooled, z)
