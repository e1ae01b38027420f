import math

import pytest
import torch

from aasp_sb.lobes.lambda_encoder import LambdaEncoder
from aasp_sb.lobes.sblu import (
    alias_band,
    sblu_direct,
    sblu_filter,
    sblu_response,
)


def emit_grid(enc, n=9, limit=30.0):
    """(alpha, omega) pairs covering every extreme the encoder can emit."""
    logits = torch.linspace(-limit, limit, n)
    w_logit, a_logit = torch.meshgrid(logits, logits, indexing="ij")
    return enc.constrain(w_logit.reshape(-1), a_logit.reshape(-1))


def db(x):
    return 20 * torch.log10(x)


@pytest.mark.parametrize("patch_t", [16, 8])
def test_every_emittable_kernel_keeps_its_promises(patch_t):
    """Dense grid of raw logits (241 x 241, saturated ends at +-60).

    Promises: peak inside the alias-prone band, -3 dB band inside
    [pi/pt, pi], DC and the mirror -omega at least 20 dB down. The earlier
    mapping (omega up to pi, alpha bounded by DC only) broke the -3 dB band
    for 54,004 and the mirror for 27,739 of these 58,081 pairs (patch 16).
    """
    enc = LambdaEncoder(num_subbands=5, num_modes=4, patch_t=patch_t)
    alpha, omega = emit_grid(enc, n=241, limit=60.0)
    assert bool(torch.isfinite(alpha).all()) and bool(torch.isfinite(omega).all())
    lo, hi = alias_band(patch_t)
    a, w = alpha.double(), omega.double()

    def k_db(theta):
        return db(sblu_response(a, w, theta))

    assert bool((w > lo).all()) and bool((w < hi).all())
    assert float(k_db(w).abs().max()) < 1e-9  # the peak (0 dB) is at omega
    assert float(k_db(torch.full_like(w, lo)).max()) <= -3.0 + 1e-4  # lower -3 dB edge inside
    assert float(k_db(torch.full_like(w, hi)).max()) <= -3.0 + 1e-4  # upper edge inside
    assert float(k_db(torch.zeros_like(w)).max()) <= -20.0  # DC
    assert float(k_db(-w).max()) <= -20.0  # the mirror: the output stays one-sided
    assert bool((alpha >= enc.alpha_min - 1e-7).all())


@pytest.mark.parametrize("patch_t", [16, 8])
def test_response_peaks_at_omega_and_rejects_dc(patch_t):
    enc = LambdaEncoder(num_subbands=5, num_modes=4, patch_t=patch_t)
    alpha, omega = emit_grid(enc)
    lo, hi = alias_band(patch_t)
    assert bool((omega >= lo - 1e-6).all()) and bool((omega <= hi + 1e-6).all())
    # measure the implemented filter's response: impulse in, FFT of the output
    n = 4096
    impulse = torch.zeros(len(alpha), n)
    impulse[:, n // 2] = 1.0
    y = sblu_filter(impulse, alpha, omega, n_fft=2 * n)
    mag = torch.fft.fft(y, dim=-1).abs()  # n bins over [0, 2 pi)
    peak_bin = mag.argmax(-1).float()
    expected_bin = omega * n / (2 * math.pi)
    assert float((peak_bin - expected_bin).abs().max()) <= 1.0
    peak = mag.max(-1).values
    dc_db = db(mag[:, 0] / peak)
    assert float(dc_db.max()) <= -20.0
    mirror_bin = (n - omega * n / (2 * math.pi)).round().long() % n
    mirror_db = db(mag.gather(1, mirror_bin[:, None])[:, 0] / peak)
    assert float(mirror_db.max()) <= -20.0
    # the implemented filter's -3 dB band lies inside the alias-prone band
    inside = (torch.arange(n)[None, :] * 2 * math.pi / n >= lo - 1e-9) & (
        torch.arange(n)[None, :] * 2 * math.pi / n <= hi + 1e-9
    )
    half_power = mag >= peak[:, None] * 10 ** (-3 / 20) * (1 + 1e-4)
    assert not bool((half_power & ~inside).any())


def test_closed_form_peak_is_one():
    alpha = torch.tensor([0.02, 0.1, 0.5])
    omega = torch.tensor([0.3, 1.0, 3.0])
    k = sblu_response(alpha, omega, omega)
    assert torch.allclose(k, torch.ones(3), atol=1e-6)


def test_frequency_domain_equals_direct_convolution():
    # tolerance: 1e-6 absolute on unit-variance input (float32 FFT vs float64 direct)
    torch.manual_seed(1)
    v = torch.randn(3, 4, 150)
    alpha = torch.rand(3, 4) * 0.3 + 0.05
    omega = torch.rand(3, 4) * 2.5 + 0.3
    direct = sblu_direct(v.double(), alpha.double(), omega.double(), half_width=900)
    fast = sblu_filter(v, alpha, omega, n_fft=2048)
    err = (direct - fast.to(direct.dtype)).abs().max().item()
    assert err < 1e-5, err


def test_gradients_reach_alpha_and_omega():
    v = torch.randn(2, 100)
    alpha = torch.tensor([0.1, 0.2], requires_grad=True)
    omega = torch.tensor([0.8, 1.5], requires_grad=True)
    sblu_filter(v, alpha, omega, 512).abs().sum().backward()
    assert alpha.grad is not None and bool((alpha.grad.abs() > 0).all())
    assert omega.grad is not None and bool((omega.grad.abs() > 0).all())
