"""Lambda encoder: estimates each clip's SBLU parameters from the input.

The paper states that AaPE's kernel parameters are estimated from the input
(the "Lambda Encoder" of the public review). Our design: a depthwise
convolution over time on each subband's mode signals, masked mean and standard
deviation over the frames present (real frames, and in pre-training only the
frames of the view's visible patches, row by row), a subband embedding, and an
MLP that emits one decay ``alpha`` and one centre frequency ``omega`` per
(clip, subband, mode), both constrained so that every pair it can emit, for
any raw output, keeps the kernel's promises::

    omega = omega_lo + (omega_hi - omega_lo) * sigmoid(.)
    alpha = alpha_min + (alpha_max(omega) - alpha_min) * sigmoid(.)

:func:`aasp_sb.lobes.sblu.alpha_max` bounds the decay so that DC and the
mirror frequency ``-omega`` are at least ``dc_rejection_db`` below the peak
and the -3 dB band lies inside ``[pi / pt, pi]``;
:func:`aasp_sb.lobes.sblu.centre_range` gives ``[omega_lo, omega_hi]``, the
centre frequencies where even the narrowest kernel (``alpha_min``) keeps them
(the band's edges themselves cannot be centres: a kernel there has half its
pass-band outside).
"""

import math

import torch
from torch import nn

from aasp_sb.lobes.sblu import alias_band, alpha_max, centre_range


def masked_mean_std(h, valid_frames=None, keep=None):
    """Mean and std over the last axis, counting only the frames present.

    Arguments
    ---------
    h : torch.Tensor
        ``[B, ..., T]``.
    valid_frames : torch.Tensor or None
        ``[B]`` real frames per clip (the first ``valid_frames`` count).
    keep : torch.Tensor or None
        Boolean or 0/1 mask broadcastable to ``h``, True for frames present
        (e.g. a view's visible patches, per subband); combined with
        ``valid_frames`` when both are given.

    Returns
    -------
    tuple of torch.Tensor
        ``([B, ...], [B, ...])``.

    Example
    -------
    >>> h = torch.tensor([[1.0, 3.0, 100.0]])
    >>> m, s = masked_mean_std(h, torch.tensor([2]))
    >>> m.item(), s.item()
    (2.0, 1.0)
    >>> m, _ = masked_mean_std(h, keep=torch.tensor([[True, False, True]]))
    >>> m.item()
    50.5
    """
    if valid_frames is None and keep is None:
        return h.mean(-1), h.std(-1, unbiased=False)
    T = h.shape[-1]
    weight = torch.ones((), device=h.device, dtype=h.dtype)
    if valid_frames is not None:
        real = torch.arange(T, device=h.device)[None, :] < valid_frames[:, None]
        weight = real.view(real.shape[0], *([1] * (h.ndim - 2)), T).to(h.dtype)
    if keep is not None:
        weight = weight * keep.to(h.dtype)
    weight = weight.expand_as(h)
    count = weight.sum(-1).clamp_min(1.0)
    mean = (h * weight).sum(-1) / count
    var = (((h - mean.unsqueeze(-1)) * weight) ** 2).sum(-1) / count
    return mean, (var + 1e-8).sqrt()


class LambdaEncoder(nn.Module):
    """Predicts per-clip, per-subband, per-mode ``(alpha, omega)``.

    Arguments
    ---------
    num_subbands : int
        Number of subbands ``S`` (patch rows).
    num_modes : int
        Modes per subband ``H``.
    patch_t : int
        Patch width in frames; sets the alias-prone band ``(pi/pt, pi)``.
    hidden : int
        MLP width.
    kernel_size : int
        Depthwise temporal convolution size.
    alpha_min : float
        Smallest decay (longest kernel, ``1/alpha_min`` frames).
    dc_rejection_db : float
        Attenuation at DC and at the mirror frequency ``-omega`` that every
        emitted kernel guarantees (its -3 dB band also stays in the band).

    Example
    -------
    >>> enc = LambdaEncoder(num_subbands=5, num_modes=4)
    >>> alpha, omega = enc(torch.randn(2, 5, 4, 64))
    >>> alpha.shape, bool((omega > 3.1416 / 16).all())
    (torch.Size([2, 5, 4]), True)
    """

    def __init__(
        self,
        num_subbands,
        num_modes,
        patch_t=16,
        hidden=64,
        kernel_size=9,
        alpha_min=0.02,
        dc_rejection_db=23.0,
    ):
        super().__init__()
        self.num_modes = num_modes
        self.patch_t = patch_t
        self.band = alias_band(patch_t)
        self.dc_rejection_db = dc_rejection_db
        if not alpha_min > 0:
            raise ValueError(f"alpha_min must be positive, got {alpha_min}")
        try:
            self.omega_low, self.omega_high = centre_range(
                alpha_min, patch_t, dc_rejection_db
            )
        except ValueError as err:
            raise ValueError(f"LambdaEncoder: {err} (check `alpha_min`)") from None
        self.alpha_min = alpha_min
        self.temporal = nn.Conv1d(
            num_modes,
            num_modes,
            kernel_size,
            padding=kernel_size // 2,
            groups=num_modes,
        )
        self.subband_embed = nn.Parameter(torch.zeros(num_subbands, hidden))
        self.mlp_in = nn.Linear(4 * num_modes, hidden)
        self.act = nn.GELU()
        self.mlp_out = nn.Linear(hidden, 2 * num_modes)
        self._init_output()

    def _init_output(self):
        """Starts with centre frequencies spread log-uniformly over the band."""
        nn.init.normal_(self.mlp_out.weight, std=0.01)
        H = self.num_modes
        lo, hi = self.omega_low, self.omega_high
        band_lo, band_hi = self.band
        centres = torch.logspace(
            math.log10(max(band_lo * 1.15, lo * 1.01)),
            math.log10(min(band_hi * 0.9, hi * 0.99)),
            H,
        )
        frac = (centres - lo) / (hi - lo)
        with torch.no_grad():
            self.mlp_out.bias[:H] = torch.logit(frac)
            self.mlp_out.bias[H:] = 0.0

    def constrain(self, omega_logit, alpha_logit):
        """Maps raw outputs (any finite value) to ``(alpha, omega)`` that keep the promises.

        Example
        -------
        >>> enc = LambdaEncoder(5, 2)
        >>> a, w = enc.constrain(torch.tensor([-50.0, 50.0]), torch.tensor([50.0, 50.0]))
        >>> bool(torch.all(a <= enc.max_alpha(w) + 1e-6))
        True
        """
        lo, hi = self.omega_low, self.omega_high
        omega = lo + (hi - lo) * torch.sigmoid(omega_logit)
        top = self.max_alpha(omega).clamp_min(self.alpha_min)
        alpha = self.alpha_min + (top - self.alpha_min) * torch.sigmoid(
            alpha_logit
        )
        return alpha, omega

    def max_alpha(self, omega):
        """Largest decay allowed at ``omega`` (see :func:`alpha_max`)."""
        return alpha_max(omega, self.dc_rejection_db, patch_t=self.patch_t)

    def forward(self, v, valid_frames=None, keep=None):
        """Estimates kernel parameters.

        Arguments
        ---------
        v : torch.Tensor
            ``[B, S, H, T]`` mode signals (zero beyond the real frames and at
            frames not present).
        valid_frames : torch.Tensor, optional
            ``[B]`` real frames per clip.
        keep : torch.Tensor, optional
            ``[B, S, 1, T]`` (or broadcastable) mask of the frames present
            per subband; the statistics count only those (a masked view's
            hidden patches are absent, not zeros in the average).

        Returns
        -------
        alpha : torch.Tensor
            ``[B, S, H]`` decays.
        omega : torch.Tensor
            ``[B, S, H]`` centre frequencies (rad/frame).
        """
        B, S, H, T = v.shape
        with torch.autocast(v.device.type, enabled=False):
            v = v.float()
            h = self.act(self.temporal(v.reshape(B * S, H, T)))
            h = h.view(B, S, H, T)
            stats = torch.cat(
                [
                    *masked_mean_std(h, valid_frames, keep),
                    *masked_mean_std(v, valid_frames, keep),
                ],
                dim=-1,
            )  # [B, S, 4H]
            z = self.act(self.mlp_in(stats) + self.subband_embed)
            out = self.mlp_out(z)
            return self.constrain(out[..., :H], out[..., H:])
