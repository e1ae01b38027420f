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


def emit_grid(enc, n=9):
    """(alpha, omega) pairs covering every extreme the encoder can emit."""
    logits = torch.linspace(-30, 30, n)
    w_logit, a_logit = torch.meshgrid(logits, logits, indexing="ij")
    return enc.constrain(w_logit.reshape(-1), a_logit.reshape(-1))


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
    mag = torch.fft.fft(y, dim=-1).abs()
    peak_bin = mag.argmax(-1).float()
    expected_bin = omega * n / (2 * math.pi)
    assert float((peak_bin - expected_bin).abs().max()) <= 1.0
    dc_db = 20 * torch.log10(mag[:, 0] / mag.max(-1).values)
    assert float(dc_db.max()) <= -20.0


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
