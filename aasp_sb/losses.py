"""Pre-training objectives: masked-feature regression and multi-mask contrast.

- :func:`regression_loss`: M2D's ``2 - 2 cos(prediction, target)`` over the
  masked positions, with targets from :func:`layer_norm_targets`.
- :class:`ContrastiveHead` + :func:`multi_positive_infonce`: **[paper:
  multi-mask contrastive term]**; **our design**: each masked view's pooled
  student output goes through a small MLP, is L2-normalised, and the other
  views of the same clip are its positives while every view of every other
  clip in the (local) batch is a negative.

Total loss (DESIGN.md §4): ``regression + lambda * contrastive``.
"""

import torch
import torch.nn.functional as F
from torch import nn

from aasp_sb.lobes.layers import trunc_normal_init


def regression_loss(pred, target, weights=None):
    """Mean of ``2 - 2 cos(pred, target)`` over positions (M2D's loss).

    Computed in float32. The target is used as given: produce it without
    gradients (e.g. from the EMA teacher).

    Arguments
    ---------
    pred : torch.Tensor
        Predictions ``[..., D]``.
    target : torch.Tensor
        Targets ``[..., D]`` (same shape).
    weights : torch.Tensor, optional
        Non-negative weights broadcastable to ``pred.shape[:-1]`` (e.g. 0 for
        padded positions); the loss is then the weighted mean.

    Returns
    -------
    torch.Tensor
        Scalar loss in [0, 4].

    Example
    -------
    >>> x = torch.randn(2, 5, 8)
    >>> regression_loss(x, 3 * x).abs().item() < 1e-6
    True
    >>> regression_loss(torch.tensor([1.0, 0.0]), torch.tensor([0.0, 1.0])).item()
    2.0
    """
    if pred.shape != target.shape:
        raise ValueError(
            f"pred {tuple(pred.shape)} and target {tuple(target.shape)} differ"
        )
    p = F.normalize(pred.float(), dim=-1)
    t = F.normalize(target.float(), dim=-1)
    per_pos = 2.0 - 2.0 * (p * t).sum(dim=-1)
    if weights is None:
        return per_pos.mean()
    w = torch.broadcast_to(weights.to(per_pos.dtype), per_pos.shape)
    return (per_pos * w).sum() / w.sum().clamp_min(1e-8)


def layer_norm_targets(layers, top_k=1):
    """Teacher targets: mean of the top-k layer outputs, each layer-normalised.

    Each layer is normalised over its feature dimension without affine
    parameters (data2vec / M2D style) before averaging.

    Arguments
    ---------
    layers : list of torch.Tensor or torch.Tensor
        Per-layer outputs ``[B, N, D]`` ordered bottom to top, a stacked
        ``[L, B, N, D]`` tensor, or a single ``[B, N, D]`` output.
    top_k : int
        Number of top layers to average (1: the last layer only).

    Returns
    -------
    torch.Tensor
        ``[B, N, D]`` targets.

    Example
    -------
    >>> outs = [torch.randn(2, 3, 8) for _ in range(4)]
    >>> layer_norm_targets(outs, top_k=2).shape
    torch.Size([2, 3, 8])
    """
    if torch.is_tensor(layers):
        if layers.ndim == 3:
            layers = [layers]
        elif layers.ndim == 4:
            layers = list(layers.unbind(0))
        else:
            raise ValueError(
                f"layers must be [B, N, D] or [L, B, N, D], got {tuple(layers.shape)}"
            )
    layers = list(layers)
    if not 1 <= top_k <= len(layers):
        raise ValueError(f"top_k must be in [1, {len(layers)}], got {top_k}")
    chosen = layers[-top_k:]
    dim = chosen[0].shape[-1]
    normed = [F.layer_norm(x, (dim,)) for x in chosen]
    if top_k == 1:
        return normed[0]
    return torch.stack(normed, dim=0).mean(dim=0)


class ContrastiveHead(nn.Module):
    """Projection head for the multi-mask contrastive term.

    ``Linear -> GELU -> Linear`` then L2 normalisation.

    Arguments
    ---------
    dim : int
        Input width (the student's width; feed pooled view embeddings).
    proj_dim : int
        Output width.
    hidden_dim : int, optional
        Hidden width (defaults to ``dim``).

    Example
    -------
    >>> head = ContrastiveHead(16, proj_dim=8)
    >>> z = head(torch.randn(4, 2, 16))
    >>> z.shape, torch.allclose(z.norm(dim=-1), torch.ones(4, 2))
    (torch.Size([4, 2, 8]), True)
    """

    def __init__(self, dim, proj_dim=256, hidden_dim=None):
        super().__init__()
        hidden_dim = hidden_dim or dim
        self.fc1 = nn.Linear(dim, hidden_dim)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden_dim, proj_dim)
        self.apply(trunc_normal_init)

    def forward(self, x):
        """Projects and L2-normalises.

        Arguments
        ---------
        x : torch.Tensor
            ``[..., dim]`` pooled embeddings.

        Returns
        -------
        torch.Tensor
            ``[..., proj_dim]`` with unit L2 norm.
        """
        return F.normalize(self.fc2(self.act(self.fc1(x))), dim=-1)


def multi_positive_infonce(z, tau=0.2):
    """Multi-positive InfoNCE over the masked views of a batch of clips.

    With all ``B * M`` views as anchors: ``logits = z z^T / tau``, the anchor
    itself removed from the softmax denominator; the positives of an anchor
    are the ``M - 1`` other views of its clip. The loss is the negative mean,
    over anchors, of the mean log-softmax over their positives (SupCon's
    "L_out"). Computed in float32. When all embeddings are equal it equals
    ``log(B * M - 1)`` (chance).

    Arguments
    ---------
    z : torch.Tensor
        ``[B, M, d]`` L2-normalised view embeddings.
    tau : float
        Temperature.

    Returns
    -------
    torch.Tensor
        Scalar loss.

    Example
    -------
    >>> import math
    >>> z = torch.nn.functional.normalize(torch.ones(3, 2, 4), dim=-1)
    >>> round(multi_positive_infonce(z).item(), 5) == round(math.log(5), 5)
    True
    """
    if z.ndim != 3:
        raise ValueError(f"z must be [B, M, d], got {tuple(z.shape)}")
    B, M, _ = z.shape
    if M < 2:
        raise ValueError(
            f"multi_positive_infonce needs at least 2 views per clip, got M={M}"
        )
    if tau <= 0:
        raise ValueError(f"tau must be positive, got {tau}")
    flat = z.float().reshape(B * M, -1)
    logits = flat @ flat.t() / tau
    eye = torch.eye(B * M, dtype=torch.bool, device=z.device)
    logits = logits.masked_fill(eye, float("-inf"))
    log_prob = logits.log_softmax(dim=-1)
    clip = torch.arange(B, device=z.device).repeat_interleave(M)
    positives = (clip[:, None] == clip[None, :]) & ~eye
    pos_log_prob = torch.where(positives, log_prob, log_prob.new_zeros(()))
    return -(pos_log_prob.sum(dim=-1) / (M - 1)).mean()
