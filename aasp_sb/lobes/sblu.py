"""SBLU: the band-limited complex kernel at the heart of AaPE.

One mode's kernel is a complex sinusoid under a two-sided exponential window
(the paper's "band-limited complex sinusoidal kernel with a two-sided
exponential window"; our parameterisation)::

    k[m] = g * r**|m| * exp(j * omega * m),   r = exp(-alpha),  m in Z
    g    = (1 - r) / (1 + r)                  (unit gain at omega)

Its DTFT is closed-form::

    K(theta) = (1 - r)**2 / (1 - 2 r cos(theta - omega) + r**2)

a one-sided (analytic) resonance at ``+omega`` with peak value 1. Because the
output is analytic, ``|y|`` is the envelope of the band around ``omega``.

:func:`sblu_filter` applies it in the frequency domain (zero-padded FFT, no
kernel tensor, O(T log T), exact gradients in alpha and omega);
:func:`sblu_direct` is a time-domain reference used only by the tests.

:func:`alpha_max` gives, for each centre frequency, the largest decay whose
kernel keeps its promises (DC and the mirror ``-omega`` at least
``dc_rejection_db`` below the peak, the -3 dB band inside the alias-prone
band), and :func:`centre_range` the centre frequencies where the narrowest
kernel can keep them: together they bound what the Lambda encoder emits.
"""

import math

import torch


def alias_band(patch_t):
    """Alias-prone band ``(pi / pt, pi)`` in rad/frame for a patch of ``pt`` frames.

    Modulations above the token rate's Nyquist frequency fold when the stem
    decimates time by ``pt``.

    Example
    -------
    >>> lo, hi = alias_band(16)
    >>> round(lo, 4), round(hi, 4)
    (0.1963, 3.1416)
    """
    return math.pi / patch_t, math.pi


def sblu_response(alpha, omega, theta):
    """Closed-form magnitude response ``K(theta)`` (real, peak 1 at ``omega``).

    Arguments
    ---------
    alpha : torch.Tensor
        Decay(s) ``> 0``, broadcastable against ``theta``.
    omega : torch.Tensor
        Centre frequency(ies) in rad/frame.
    theta : torch.Tensor
        Frequencies (rad/frame) at which to evaluate.

    Returns
    -------
    torch.Tensor
        ``K(theta)``, broadcast shape.

    Example
    -------
    >>> k = sblu_response(torch.tensor(0.05), torch.tensor(1.0), torch.tensor([0.0, 1.0]))
    >>> round(k[1].item(), 6)
    1.0
    """
    r = torch.exp(-alpha)
    one_minus_r_sq = torch.expm1(-alpha) ** 2
    # 1 - 2 r cos(d) + r^2 == (1 - r)^2 + 4 r sin^2(d / 2), without cancellation
    return one_minus_r_sq / (
        one_minus_r_sq + 4 * r * torch.sin((theta - omega) / 2) ** 2
    )


def decay_bound(distance, rejection_db):
    """Largest decay whose response ``distance`` rad away from ``omega`` is ``rejection_db`` down.

    ``K`` depends on the offset ``d = theta - omega`` only through
    ``sin(d / 2)**2``: with ``c = (1 - r)**2 / r = 4 sinh(alpha / 2)**2``,
    ``K(d) = c / (c + 4 sin(d / 2)**2)``. Solving ``K(d) = g`` with
    ``g = 10**(-dB / 20)`` gives ``alpha = 2 asinh(sqrt(g / (1 - g)) |sin(d / 2)|)``,
    and any smaller alpha (a longer, narrower kernel) puts ``d`` further down.
    Numerically stable for small offsets and differentiable.

    Arguments
    ---------
    distance : torch.Tensor
        Offset(s) from the centre frequency, rad/frame.
    rejection_db : float
        Required attenuation there, magnitude dB (positive).

    Returns
    -------
    torch.Tensor
        The bound, same shape as ``distance``.

    Example
    -------
    >>> a = decay_bound(torch.tensor(0.5), 3.0)
    >>> k = sblu_response(a, torch.tensor(1.0), torch.tensor(1.5))
    >>> round(20 * torch.log10(k).item(), 4)
    -3.0
    """
    g = 10.0 ** (-rejection_db / 20.0)
    scale = math.sqrt(g / (1.0 - g))
    return 2 * torch.asinh(scale * torch.sin(distance / 2).abs())


def alpha_max(
    omega,
    dc_rejection_db=23.0,
    patch_t=None,
    mirror_rejection_db=None,
    edge_db=3.0,
):
    """Largest decay that keeps every promise of the kernel at ``omega``.

    The promises (each a :func:`decay_bound`, the bound is their minimum):

    - DC is ``dc_rejection_db`` below the peak (offset ``omega``);
    - with ``patch_t``: the mirror frequency ``-omega`` is
      ``mirror_rejection_db`` below the peak (offset ``2 omega``, which wraps
      onto the pass-band near pi, so the one-sided "analytic" property needs
      it), and the ``edge_db`` (-3 dB) band lies inside the alias-prone band
      ``[pi / patch_t, pi]`` (offsets ``omega - pi / patch_t`` and
      ``pi - omega``).

    Without ``patch_t`` only the DC promise is applied (the original bound).
    Outside the range where a kernel can keep them all the bound falls to 0.

    Arguments
    ---------
    omega : torch.Tensor
        Centre frequencies (rad/frame).
    dc_rejection_db : float
        Required attenuation at DC relative to the peak (magnitude dB).
    patch_t : int, optional
        Patch width; enables the mirror and band-edge promises.
    mirror_rejection_db : float, optional
        Attenuation at ``-omega`` (default: ``dc_rejection_db``).
    edge_db : float
        The pass-band edge kept inside the band (3 dB: the half-power band).

    Returns
    -------
    torch.Tensor
        ``alpha_max(omega)``.

    Example
    -------
    >>> w = torch.tensor(1.0)
    >>> a = alpha_max(w, 20.0)
    >>> k0 = sblu_response(a, w, torch.tensor(0.0))
    >>> round(20 * torch.log10(k0).item(), 3)
    -20.0
    >>> w = torch.tensor(3.0)
    >>> a = alpha_max(w, 20.0, patch_t=16)
    >>> k_mirror = sblu_response(a, w, -w)
    >>> round(20 * torch.log10(k_mirror).item(), 3)
    -20.0
    """
    bound = decay_bound(omega, dc_rejection_db)
    if patch_t is None:
        return bound
    mirror_db = dc_rejection_db if mirror_rejection_db is None else mirror_rejection_db
    lo, hi = alias_band(patch_t)
    bound = torch.minimum(bound, decay_bound(2 * omega, mirror_db))
    below = decay_bound((omega - lo).clamp_min(0.0), edge_db)
    above = decay_bound((hi - omega).clamp_min(0.0), edge_db)
    return torch.minimum(bound, torch.minimum(below, above))


def centre_range(alpha_min, patch_t, dc_rejection_db=23.0, mirror_rejection_db=None, edge_db=3.0):
    """Centre frequencies at which a kernel of decay ``alpha_min`` keeps every promise.

    The narrowest kernel (``alpha_min``) still has a -3 dB half-width and
    side lobes, so ``omega`` cannot reach the band's edges: this returns the
    closed interval ``[omega_lo, omega_hi]`` inside ``(pi / patch_t, pi)`` on
    which :func:`alpha_max` is at least ``alpha_min`` (shrunk by one part in
    10^4 of the band so that float32 rounding never crosses a promise).

    Arguments
    ---------
    alpha_min : float
        Smallest decay the kernels use.
    patch_t : int
        Patch width in frames.
    dc_rejection_db, mirror_rejection_db, edge_db : float
        As in :func:`alpha_max`.

    Returns
    -------
    tuple of float
        ``(omega_lo, omega_hi)``.

    Raises
    ------
    ValueError
        When no centre frequency can keep the promises with ``alpha_min``.

    Example
    -------
    >>> lo, hi = centre_range(0.02, 16)
    >>> round(lo, 3), round(hi, 3)
    (0.209, 3.105)
    """
    mirror_db = dc_rejection_db if mirror_rejection_db is None else mirror_rejection_db
    lo, hi = alias_band(patch_t)

    def offset(db):  # smallest offset whose decay_bound reaches alpha_min
        g = 10.0 ** (-db / 20.0)
        s = math.sinh(alpha_min / 2) / math.sqrt(g / (1.0 - g))
        if s >= 1.0:
            return math.inf
        return 2 * math.asin(s)

    edge, dc, mirror = offset(edge_db), offset(dc_rejection_db), offset(mirror_db)
    omega_lo = max(lo + edge, dc, mirror / 2)
    omega_hi = min(hi - edge, math.pi - mirror / 2)
    pad = 1e-4 * (hi - lo)
    omega_lo, omega_hi = omega_lo + pad, omega_hi - pad
    if not omega_lo < omega_hi:
        raise ValueError(
            f"alpha_min={alpha_min} is too large for patch width {patch_t}: no "
            "centre frequency keeps the kernel's -3 dB band inside the "
            "alias-prone band with the required DC and mirror rejection"
        )
    return omega_lo, omega_hi


def next_fast_len(n):
    """Smallest integer ``>= n`` whose prime factors are 2, 3 and 5.

    Example
    -------
    >>> next_fast_len(1209)
    1215
    """
    best = 2 ** math.ceil(math.log2(max(n, 1)))
    p5 = 1
    while p5 < best:
        p35 = p5
        while p35 < best:
            q = -(-n // p35)  # power of two times p35 that reaches n
            p2 = 2 ** math.ceil(math.log2(q)) if q > 1 else 1
            best = min(best, p2 * p35)
            p35 *= 3
        p5 *= 5
    return best


def fft_length(num_frames, alpha_min, tail=12.0):
    """FFT length so the circular wrap-around weighs ``< exp(-tail)``.

    Arguments
    ---------
    num_frames : int
        Signal length ``T``.
    alpha_min : float
        Smallest decay the kernels use (longest kernel).
    tail : float
        Zero padding in units of ``1 / alpha_min``.

    Returns
    -------
    int

    Example
    -------
    >>> fft_length(608, 0.02)
    1215
    """
    return next_fast_len(num_frames + math.ceil(tail / alpha_min))


def sblu_filter(v, alpha, omega, n_fft):
    """Filters real signals with their SBLU kernels in the frequency domain.

    Arguments
    ---------
    v : torch.Tensor
        ``[..., T]`` real signals.
    alpha : torch.Tensor
        ``[...]`` decays (one per signal).
    omega : torch.Tensor
        ``[...]`` centre frequencies (rad/frame).
    n_fft : int
        FFT length ``>= T`` (see :func:`fft_length`).

    Returns
    -------
    torch.Tensor
        ``[..., T]`` complex analytic outputs.

    Example
    -------
    >>> t = torch.arange(200.0)
    >>> v = torch.cos(0.8 * t)[None]
    >>> y = sblu_filter(v, torch.tensor([0.05]), torch.tensor([0.8]), 512)
    >>> round(y[0, 100].abs().item(), 2)  # envelope of a unit cosine: 1/2
    0.5
    """
    T = v.shape[-1]
    if n_fft < T:
        raise ValueError(f"n_fft={n_fft} is shorter than the signal ({T})")
    with torch.autocast(v.device.type, enabled=False):
        v = v.float()
        theta = torch.arange(n_fft, device=v.device, dtype=torch.float32)
        theta = theta * (2 * math.pi / n_fft)
        K = sblu_response(
            alpha.float().unsqueeze(-1), omega.float().unsqueeze(-1), theta
        )
        spec = torch.fft.fft(v, n=n_fft, dim=-1)
        return torch.fft.ifft(spec * K, dim=-1)[..., :T]


def sblu_direct(v, alpha, omega, half_width):
    """Time-domain reference of :func:`sblu_filter` (tests only; O(T * width)).

    Computes ``y[n] = sum_{|m| <= W} k[m] v[n - m]`` with zeros outside ``v``.

    Arguments
    ---------
    v : torch.Tensor
        ``[..., T]`` real signals.
    alpha, omega : torch.Tensor
        ``[...]`` kernel parameters.
    half_width : int
        Kernel support ``W`` (choose ``r**W`` negligible).

    Returns
    -------
    torch.Tensor
        ``[..., T]`` complex.

    Example
    -------
    >>> v = torch.randn(1, 64)
    >>> a, w = torch.tensor([0.1]), torch.tensor([1.0])
    >>> d = sblu_direct(v.double(), a.double(), w.double(), 400)
    >>> f = sblu_filter(v, a, w, 1024)
    >>> bool(torch.allclose(d.to(f.dtype), f, atol=1e-5))
    True
    """
    m = torch.arange(-half_width, half_width + 1, device=v.device, dtype=v.dtype)
    alpha = alpha.unsqueeze(-1)
    omega = omega.unsqueeze(-1)
    r = torch.exp(-alpha)
    g = (1 - r) / (1 + r)
    kernel = g * torch.exp(-alpha * m.abs()) * torch.exp(1j * omega * m)
    T = v.shape[-1]
    vp = torch.nn.functional.pad(v, (half_width, half_width))
    # windows[..., n, i] = vp[..., n + i] = v[n + i - W]; y[n] = sum_m k[m] v[n - m]
    windows = vp.unfold(-1, 2 * half_width + 1, 1)[..., :T, :]
    return (windows.to(kernel.dtype) * kernel.flip(-1).unsqueeze(-2)).sum(-1)
