"""AaPE: Aliasing-aware Patch Embedding, a drop-in replacement for the ViT patch stem.

What the paper states: AaPE augments the standard patch tokens with features
of the alias-prone band (temporal modulations between the token rate's Nyquist
frequency and the frame rate's), analysed in parallel subbands with adaptive
band-limited complex sinusoidal kernels whose parameters are estimated from the
input, and fuses them with the standard tokens. How each step is built here is
our design (see ``DESIGN.md`` §2):

1. standard branch: the plain :class:`~aasp_sb.lobes.patch.PatchEmbed`;
2. subbands: one per patch row; a learned map mixes each subband's ``pf``
   mel bins into ``H`` mode signals;
3. :class:`~aasp_sb.lobes.lambda_encoder.LambdaEncoder` estimates
   ``(alpha, omega)`` per clip, subband and mode inside the alias-prone band;
4. SBLU filtering in the frequency domain (:func:`~aasp_sb.lobes.sblu.sblu_filter`);
   every kernel the Lambda encoder can emit peaks inside the band, keeps its
   -3 dB band inside ``[pi/pt, pi]`` and is >= 20 dB down at DC and at its
   mirror ``-omega`` (so ``|y|`` is an envelope);
5. envelope ``log1p(gain * |y|)``, averaged over each patch's real frames
   (the envelope is low-pass, so this decimation does not alias);
6. a linear projection plus a subband embedding gives one extra token per
   patch, fused with the standard token: ``gated_add`` (``std + gate * aa``,
   a learnable per-channel gate starting at ``gate_init``) or ``concat`` (a
   Linear over ``[std; aa]`` initialised to ``std + gate_init * aa``).
   ``gate_init=1`` (default) puts the alias-band features into the tokens
   from the first step; ``gate_init=0`` starts from the plain stem, which in
   our 30-epoch demo left the branch shut (mean ``|gate|`` 0.023) and the
   encoder blind to the modulation rates the branch resolves.

In masked pre-training the student calls :meth:`AaPE.forward_views`, which
computes each view's tokens from that view's visible patches only (the
student's invariant, ``docs/DESIGN.md`` §2).
"""

import math

import torch
from torch import nn

from aasp_sb.lobes.lambda_encoder import LambdaEncoder
from aasp_sb.lobes.patch import PatchEmbed, prepare_frames
from aasp_sb.lobes.sblu import fft_length, sblu_filter
from aasp_sb.masking import gather_tokens

FUSIONS = ("gated_add", "concat")


class AaPE(PatchEmbed):
    """Aliasing-aware patch embedding (same call signature and output as :class:`PatchEmbed`).

    Arguments
    ---------
    n_mels : int
        Number of mel bins ``F``; ``pf`` must divide it.
    patch_size : int or tuple
        ``(pf, pt)``.
    embed_dim : int
        Token width ``D``.
    num_modes : int
        SBLU modes per subband ``H``.
    fusion : str
        ``"gated_add"`` (default) or ``"concat"``.
    lambda_hidden : int
        Width of the Lambda encoder's MLP.
    alpha_min : float
        Smallest kernel decay (longest kernel ``1/alpha_min`` frames).
    dc_rejection_db : float
        Attenuation at DC and at the mirror frequency ``-omega`` that every
        kernel guarantees (its -3 dB band also stays inside the alias-prone
        band; see :func:`aasp_sb.lobes.sblu.alpha_max`).
    fft_tail : float
        Zero padding of the FFT in units of ``1/alpha_min`` (wrap-around
        weight ``exp(-fft_tail)``).
    gate_init : float
        Initial weight of the alias-band tokens in the fusion (the gate's
        value, or the ``aa`` half of the ``concat`` Linear times identity);
        0 makes the stem equal to the plain stem at initialisation.

    Example
    -------
    >>> stem = AaPE(n_mels=80, patch_size=16, embed_dim=32, num_modes=4)
    >>> tokens = stem(torch.randn(2, 100, 80))
    >>> tokens.shape
    torch.Size([2, 35, 32])
    >>> alpha, omega = stem.last_lambda
    >>> alpha.shape
    torch.Size([2, 5, 4])
    """

    def __init__(
        self,
        n_mels=80,
        patch_size=16,
        embed_dim=768,
        num_modes=16,
        fusion="gated_add",
        lambda_hidden=64,
        alpha_min=0.02,
        dc_rejection_db=23.0,
        fft_tail=12.0,
        gate_init=1.0,
    ):
        super().__init__(n_mels, patch_size, embed_dim)
        if fusion not in FUSIONS:
            raise ValueError(f"fusion must be one of {FUSIONS}, got {fusion!r}")
        pf, pt = self.patch_size
        S, H = self.num_rows, num_modes
        self.num_modes = num_modes
        self.fusion = fusion
        self.fft_tail = fft_tail
        # B_in: per subband, pf mel bins -> H mode signals
        self.mode_map = nn.Parameter(torch.randn(S, H, pf) / math.sqrt(pf))
        self.lambda_encoder = LambdaEncoder(
            S,
            H,
            patch_t=pt,
            hidden=lambda_hidden,
            alpha_min=alpha_min,
            dc_rejection_db=dc_rejection_db,
        )
        self.log_gain = nn.Parameter(torch.zeros(S, H))
        self.aa_norm = nn.LayerNorm(H)
        self.aa_proj = nn.Linear(H, embed_dim)
        self.subband_embed = nn.Parameter(torch.zeros(S, embed_dim))
        nn.init.trunc_normal_(self.subband_embed, std=0.02)
        if fusion == "gated_add":
            self.gate = nn.Parameter(torch.full((embed_dim,), float(gate_init)))
        else:
            self.fuse = nn.Linear(2 * embed_dim, embed_dim)
            with torch.no_grad():
                self.fuse.weight[:, :embed_dim] = torch.eye(embed_dim)
                self.fuse.weight[:, embed_dim:] = float(gate_init) * torch.eye(embed_dim)
                self.fuse.bias.zero_()
        self.last_lambda = None

    def mode_signals(self, x):
        """``[B, T, F]`` -> ``[B, S, H, T]`` mode signals (each subband's bins mixed)."""
        B, T, F = x.shape
        pf = self.patch_size[0]
        sub = x.float().view(B, T, self.num_rows, pf)
        return torch.einsum("btsp,shp->bsht", sub, self.mode_map.float())

    def envelopes(self, v, valid_frames=None, keep=None):
        """Lambda estimation, SBLU filtering and per-patch envelopes of mode signals.

        Arguments
        ---------
        v : torch.Tensor
            ``[B, S, H, T]`` mode signals, zero at frames that are not present.
        valid_frames : torch.Tensor or None
            ``[B]`` real frames per clip.
        keep : torch.Tensor or None
            ``[B, S, T]`` frames present per subband (a view's visible
            patches); absent frames count neither in the Lambda statistics
            nor in the patch averages.

        Returns
        -------
        env : torch.Tensor
            ``[B, S, H, Tp]`` envelope averaged over each patch's frames.
        alpha, omega : torch.Tensor
            ``[B, S, H]`` the estimated kernel parameters.
        """
        B, S, H, T = v.shape
        pt = self.patch_size[1]
        keep4 = None if keep is None else keep[:, :, None, :]
        alpha, omega = self.lambda_encoder(v, valid_frames, keep4)
        n_fft = fft_length(T, self.lambda_encoder.alpha_min, self.fft_tail)
        y = sblu_filter(v, alpha, omega, n_fft)
        mag = (y.real**2 + y.imag**2 + 1e-12).sqrt()
        env = torch.log1p(self.log_gain.exp()[..., None] * mag)
        env = env.view(B, S, H, T // pt, pt)
        weight = None
        if valid_frames is not None:
            real = torch.arange(T, device=v.device)[None, :] < valid_frames[:, None]
            weight = real.to(env.dtype).view(B, 1, 1, T // pt, pt)
        if keep is not None:
            present = keep.to(env.dtype).view(B, S, 1, T // pt, pt)
            weight = present if weight is None else weight * present
        if weight is None:
            return env.mean(-1), alpha, omega
        env = (env * weight).sum(-1) / weight.sum(-1).clamp_min(1.0)
        return env, alpha, omega

    def envelope_features(self, x, valid_frames):
        """Per-patch alias-band envelopes of whole clips.

        Arguments
        ---------
        x : torch.Tensor
            ``[B, T', F]`` features, zero beyond the real frames, ``T'`` a
            multiple of ``pt``.
        valid_frames : torch.Tensor or None
            ``[B]`` real frames.

        Returns
        -------
        env : torch.Tensor
            ``[B, S, H, Tp]`` envelope averaged over each patch's real frames.
        alpha, omega : torch.Tensor
            ``[B, S, H]`` the estimated kernel parameters.
        """
        with torch.autocast(x.device.type, enabled=False):
            return self.envelopes(self.mode_signals(x), valid_frames)

    def alias_tokens(self, env):
        """``[B, S, H, Tp]`` envelopes -> ``[B, S*Tp, D]`` tokens (frequency-major)."""
        B, S, H, Tp = env.shape
        feats = self.aa_norm(env.permute(0, 1, 3, 2))  # [B, S, Tp, H]
        tokens = self.aa_proj(feats) + self.subband_embed[None, :, None, :]
        return tokens.reshape(B, S * Tp, -1)

    def alias_tokens_at(self, env, idx):
        """Alias-band tokens of the patches ``idx`` only: ``[B', K, D]``.

        Arguments
        ---------
        env : torch.Tensor
            ``[B', S, H, Tp]`` envelopes (one row per view).
        idx : torch.Tensor
            ``[B', K]`` frequency-major token indices.

        Returns
        -------
        torch.Tensor
        """
        Bv, S, H, Tp = env.shape
        feats = env.permute(0, 1, 3, 2).reshape(Bv, S * Tp, H)
        feats = feats.gather(1, idx[..., None].expand(-1, -1, H))
        rows = torch.div(idx, Tp, rounding_mode="floor")
        return self.aa_proj(self.aa_norm(feats)) + self.subband_embed[rows]

    def fuse_tokens(self, std, aa):
        """Fuses standard and alias-band tokens."""
        if self.fusion == "gated_add":
            return std + self.gate * aa
        return self.fuse(torch.cat([std, aa], dim=-1))

    def forward(self, x, lengths=None):
        """Tokenises a batch of log-mel spectrograms.

        Arguments
        ---------
        x : torch.Tensor
            ``[B, T, F]`` normalised log-mel.
        lengths : torch.Tensor, optional
            ``[B]`` relative lengths; frames beyond them never reach the tokens.

        Returns
        -------
        torch.Tensor
            ``[B, Fp*Tp, D]`` tokens, frequency-major. The estimated
            ``(alpha, omega)`` (detached) are kept in ``self.last_lambda``:
            ``[B, S, H]`` each, or ``[B * chunks, S, H]`` when an encoder
            chunks a long input.
        """
        self.check_input(x)
        x, valid = prepare_frames(x, lengths, self.patch_size[1])
        std = self.patchify(x)
        env, alpha, omega = self.envelope_features(x, valid)
        self.last_lambda = (alpha.detach(), omega.detach())
        aa = self.alias_tokens(env).to(std.dtype)
        return self.fuse_tokens(std, aa)

    def forward_views(self, x, visible, lengths=None):
        """Tokens of masked views, each computed from that view's visible patches only.

        AaPE is not local to a patch (kernels span several patch columns, the
        Lambda encoder pools over the clip), so a student that ran the stem on
        the whole clip and kept the visible tokens afterwards would see the
        masked content. Here, for every view, the masked patches of each
        subband row are absent: zero in that row's SBLU input and left out of
        its Lambda statistics and patch averages. The standard branch is local
        to its patch and runs once per clip. Batched over views.

        Arguments
        ---------
        x : torch.Tensor
            ``[B, T, F]`` normalised log-mel.
        visible : torch.Tensor
            ``[B, M, Nv]`` visible token indices per view (frequency-major).
        lengths : torch.Tensor, optional
            ``[B]`` relative lengths.

        Returns
        -------
        torch.Tensor
            ``[B*M, Nv, D]`` tokens of the visible patches, row ``b*M + m``
            for view ``m`` of clip ``b``; ``last_lambda`` holds the views'
            ``[B*M, S, H]`` estimates.

        Example
        -------
        >>> stem = AaPE(n_mels=80, patch_size=16, embed_dim=16, num_modes=4)
        >>> x = torch.randn(1, 64, 80)                      # grid (5, 4)
        >>> visible = torch.tensor([[[0, 5, 10], [1, 2, 3]]])  # two views
        >>> a = stem.forward_views(x, visible)
        >>> y = x.clone()
        >>> y[:, 16:, :16] = 1e3                 # hide content in view 0's masked patches
        >>> y[:, :16, 16:] = -7.0
        >>> b = stem.forward_views(y, visible)
        >>> a.shape, bool(torch.equal(a[0], b[0]))
        (torch.Size([2, 3, 16]), True)
        """
        self.check_input(x)
        x, valid = prepare_frames(x, lengths, self.patch_size[1])
        B, T, _ = x.shape
        M, Nv = visible.shape[1], visible.shape[2]
        S, pt = self.num_rows, self.patch_size[1]
        Tp = T // pt
        flat = visible.reshape(B * M, Nv)
        std = gather_tokens(self.patchify(x), visible)
        shown = torch.zeros(B * M, S * Tp, dtype=torch.bool, device=x.device)
        shown.scatter_(1, flat, True)
        keep = shown.view(B * M, S, Tp).repeat_interleave(pt, dim=-1)  # [BM, S, T]
        views_valid = None if valid is None else valid.repeat_interleave(M)
        with torch.autocast(x.device.type, enabled=False):
            v = self.mode_signals(x).repeat_interleave(M, dim=0)
            v = v * keep[:, :, None, :].to(v.dtype)
            env, alpha, omega = self.envelopes(v, views_valid, keep)
        self.last_lambda = (alpha.detach(), omega.detach())
        aa = self.alias_tokens_at(env, flat).to(std.dtype)
        return self.fuse_tokens(std, aa)


def make_stem(use_aape=True, n_mels=80, patch_size=16, embed_dim=768, **aape_kwargs):
    """Builds the AaPE stem or, with ``use_aape=False``, the plain stem.

    Lets one YAML key (``use_aape``) switch the ablation with everything else
    equal: ``stem: !apply:aasp_sb.lobes.aape.make_stem {use_aape: !ref <use_aape>, ...}``.

    Arguments
    ---------
    use_aape : bool
        AaPE when True, the plain patch stem otherwise.
    n_mels, patch_size, embed_dim : int
        Shared stem settings.
    **aape_kwargs
        Passed to :class:`AaPE` (ignored by the plain stem).

    Returns
    -------
    torch.nn.Module

    Example
    -------
    >>> type(make_stem(False, embed_dim=16)).__name__
    'PatchEmbed'
    """
    if use_aape:
        return AaPE(n_mels, patch_size, embed_dim, **aape_kwargs)
    return PatchEmbed(n_mels, patch_size, embed_dim)
