"""SpecAugment-style masking and mixup (aasp_sb.augment)."""

import pytest
import torch

from aasp_sb.augment import (
    Mixup,
    SpecAugment,
    bands_to_mask,
    one_hot,
    sample_bands,
)


def test_spec_augment_masks_exactly_the_stated_number_of_bands():
    B, T, F = 4, 200, 80
    aug = SpecAugment(
        freq_mask_width=(6, 6),
        num_freq_masks=3,
        time_mask_width=(10, 10),
        num_time_masks=2,
        time_mask_max_ratio=1.0,
    )
    x = torch.randn(B, T, F) + 5.0  # no entry is 0 before masking
    g1, g2 = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    out, (fmask, tmask) = aug(x, generator=g1, return_masks=True)
    # the same draws, band by band: 3 frequency bands and 2 time spans per clip
    fs, fw = sample_bands(B, 3, (6, 6), torch.full((B,), F), g2)
    ts, tw = sample_bands(B, 2, (10, 10), torch.full((B,), T), g2)
    assert fs.shape == (B, 3) and ts.shape == (B, 2)
    assert (fw == 6).all() and (tw == 10).all()
    assert ((fs >= 0) & (fs + fw <= F)).all() and (
        (ts >= 0) & (ts + tw <= T)
    ).all()
    assert torch.equal(fmask, bands_to_mask(fs, fw, F))
    assert torch.equal(tmask, bands_to_mask(ts, tw, T))
    for b in range(B):
        bins = {int(f) + k for f in fs[b] for k in range(6)}
        frames = {int(t) + k for t in ts[b] for k in range(10)}
        assert set(torch.nonzero(fmask[b]).flatten().tolist()) == bins
        assert set(torch.nonzero(tmask[b]).flatten().tolist()) == frames
        zeroed = out[b] == 0
        expected = fmask[b][None, :] | tmask[b][:, None]
        assert torch.equal(zeroed, expected)


def test_spec_augment_with_disjoint_bands_masks_num_times_width_bins():
    # one band per clip can never overlap itself: exactly `width` bins
    aug = SpecAugment(
        freq_mask_width=(7, 7), num_freq_masks=1, time_mask_width=0
    )
    _, (fmask, tmask) = aug(torch.randn(16, 50, 80), return_masks=True)
    assert (fmask.sum(1) == 7).all() and not tmask.any()


def test_time_masks_stay_in_the_real_frames_and_input_is_untouched():
    aug = SpecAugment(
        freq_mask_width=0,
        time_mask_width=(20, 20),
        num_time_masks=3,
        time_mask_max_ratio=0.5,
    )
    x = torch.ones(2, 100, 8)
    keep = x.clone()
    lengths = torch.tensor([1.0, 0.3])  # clip 2 has 30 real frames
    out, (_, tmask) = aug(x, lengths, return_masks=True)
    assert torch.equal(x, keep)
    assert not tmask[1, 30:].any()
    # spans are capped at half of clip 2's 30 frames
    assert tmask[1].sum() <= 3 * 15 and tmask[1].any()
    assert out.data_ptr() != x.data_ptr()


def test_spec_augment_is_identity_in_eval_mode():
    aug = SpecAugment().eval()
    x = torch.randn(2, 100, 80)
    assert aug(x) is x
    assert not torch.equal(aug(x, force=True), x)


def test_width_arguments_are_checked():
    with pytest.raises(ValueError, match="freq_mask_width"):
        SpecAugment(freq_mask_width=(5, 2))
    with pytest.raises(ValueError, match="time_mask_max_ratio"):
        SpecAugment(time_mask_max_ratio=0.0)


def test_mixup_mixes_labels_with_the_same_lambda_as_inputs():
    torch.manual_seed(1)
    mix = Mixup(alpha=0.4)
    x = (
        torch.arange(6, dtype=torch.float32)
        .view(6, 1, 1)
        .expand(6, 10, 3)
        .contiguous()
    )
    y = one_hot(torch.tensor([0, 1, 2, 0, 1, 2]), 3)
    lengths = torch.tensor([1.0, 0.5, 0.7, 1.0, 0.2, 0.9])
    out = mix(x, y, lengths)
    lam, perm = out.lam, out.perm
    assert lam.shape == (6,) and ((lam > 0) & (lam < 1)).all()
    assert sorted(perm.tolist()) == list(range(6))
    # each mixed input is lam * own + (1 - lam) * partner: recover lam from it
    recovered = out.inputs[:, 0, 0]
    assert torch.allclose(
        recovered, lam * x[:, 0, 0] + (1 - lam) * x[perm, 0, 0]
    )
    assert torch.allclose(
        out.targets, lam[:, None] * y + (1 - lam[:, None]) * y[perm]
    )
    assert torch.allclose(out.targets.sum(1), torch.ones(6))
    assert torch.equal(out.lengths, torch.maximum(lengths, lengths[perm]))


def test_mixup_is_off_in_eval_mode_or_with_alpha_zero():
    x, y = torch.randn(4, 8), torch.eye(4)
    for mix in (Mixup(0.3).eval(), Mixup(0.0)):
        out = mix(x, y)
        assert out.inputs is x and torch.equal(out.targets, y)
        assert torch.equal(out.lam, torch.ones(4))


# ------------------------------------------------------------ random resize crop
def test_rrc_whole_input_is_identity_and_eval_is_noop():
    from aasp_sb.augment import RandomResizeCrop

    x = torch.randn(3, 40, 16)
    same = RandomResizeCrop((1.0, 1.0), (1.0, 1.0), (1.0, 1.0))
    torch.testing.assert_close(same(x), x, atol=1e-4, rtol=0)
    assert RandomResizeCrop().eval()(x) is x


def test_rrc_same_size_crop_is_an_integer_time_shift():
    """A crop as long as the input, on the 1.5x canvas, shifts it by whole frames."""
    from aasp_sb.augment import RandomResizeCrop

    T, F_ = 40, 8
    x = torch.arange(1, T + 1, dtype=torch.float).view(1, T, 1).expand(6, T, F_).contiguous()
    rrc = RandomResizeCrop((1.5, 1.0), (1.0, 1.0), (1.0, 1.0), mode="bilinear")
    y = rrc(x, generator=torch.Generator().manual_seed(3))
    shifts = set()
    for b in range(6):
        rows = y[b, :, 0]
        real = rows.abs() > 1e-3
        assert real.any() and torch.allclose(y[b], rows.view(T, 1).expand(T, F_), atol=1e-4)
        k = torch.nonzero(real)[0].item()
        shift = rows[k].round().item() - 1 - k  # output row k shows input row k + shift
        assert torch.allclose(rows[real], torch.arange(T)[real].float() + 1 + shift, atol=1e-3)
        assert abs(shift) <= T // 4  # the canvas adds T/4 of zeros on each side
        shifts.add(shift)
    assert len(shifts) > 1  # drawn per clip


def test_rrc_zoom_out_pads_with_zeros_and_keeps_the_middle():
    from aasp_sb.augment import RandomResizeCrop

    x = torch.ones(2, 60, 20)
    rrc = RandomResizeCrop((1.5, 1.0), (1.5, 1.5), (1.0, 1.0), mode="bilinear")
    y = rrc(x, generator=torch.Generator().manual_seed(0))
    # the whole 1.5x canvas squeezed into 60 frames: ~10 zero frames each side
    assert y[:, :8].abs().max() < 1e-4 and y[:, -8:].abs().max() < 1e-4
    torch.testing.assert_close(y[:, 15:45], torch.ones(2, 30, 20))


def test_rrc_reproducible_with_generator_and_validates_arguments():
    from aasp_sb.augment import RandomResizeCrop

    x = torch.randn(4, 50, 80)
    rrc = RandomResizeCrop()
    a = rrc(x, generator=torch.Generator().manual_seed(7))
    b = rrc(x, generator=torch.Generator().manual_seed(7))
    assert torch.equal(a, b) and not torch.allclose(a, x)
    with pytest.raises(ValueError, match="time_scale"):
        RandomResizeCrop(time_scale=(0.6, 0.9))
    with pytest.raises(ValueError, match="virtual_crop_scale"):
        RandomResizeCrop(virtual_crop_scale=(0.5, 1.0))
