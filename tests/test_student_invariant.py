"""The student's invariant: nothing of a view's masked patches reaches the student.

For every view, the content of its masked patches is replaced by arbitrary
values; the view's predictions and pooled context must not change (relative
1e-6). With ``stem_input="clip"`` (the stem runs on the whole clip, the
ablation kept on purpose) the same test must detect AaPE's leak.
"""

import pytest
import torch

from aasp_sb.lobes.aape import make_stem
from aasp_sb.lobes.encoder import AudioViT
from aasp_sb.lobes.predictor import CrossAttentionPredictor
from aasp_sb.lobes.student import MaskedStudent
from aasp_sb.losses import ContrastiveHead
from aasp_sb.masking import multi_mask

PF = PT = 16
T, F, M = 128, 80, 4  # grid (5, 8): 40 tokens, 4 masks per clip


def build_student(use_aape, fusion="gated_add", stem_input="view"):
    torch.manual_seed(0)
    stem = make_stem(
        use_aape, n_mels=F, patch_size=16, embed_dim=32, num_modes=4, fusion=fusion
    )
    encoder = AudioViT(stem, 32, depth=2, num_heads=4, max_frames=T)
    predictor = CrossAttentionPredictor(32, 32, depth=1, num_heads=4)
    student = MaskedStudent(
        encoder, predictor, ContrastiveHead(32, 16), stem_input=stem_input
    )
    return student.eval()


def overwrite_masked(feats, masked_idx, Tp, seed):
    """Copy of ``feats`` whose patches ``masked_idx`` (one view) hold arbitrary values."""
    g = torch.Generator().manual_seed(seed)
    out = feats.clone()
    for b in range(feats.shape[0]):
        for i in masked_idx[b].tolist():
            row, col = divmod(i, Tp)
            patch = out[b, col * PT : (col + 1) * PT, row * PF : (row + 1) * PF]
            patch.copy_(torch.randn(patch.shape, generator=g) * 30 + 5)
    return out


def max_view_change(student):
    """Largest relative change of any view's predictions / pooled context."""
    g = torch.Generator().manual_seed(1)
    feats = torch.randn(2, T, F, generator=g)
    visible, masked = multi_mask(2, 40, M, 0.7, generator=g)
    Tp = T // PT
    with torch.no_grad():
        ref = student(feats, visible, masked)
        pred_ref = ref.pred.view(2, M, *ref.pred.shape[1:])
        worst_pred = worst_pooled = 0.0
        for m in range(M):
            out = student(overwrite_masked(feats, masked[:, m], Tp, seed=m), visible, masked)
            pred = out.pred.view(2, M, *out.pred.shape[1:])
            d_pred = (pred[:, m] - pred_ref[:, m]).abs().max() / pred_ref[:, m].abs().max()
            d_pool = (out.pooled[:, m] - ref.pooled[:, m]).abs().max() / (
                ref.pooled[:, m].abs().max()
            )
            worst_pred = max(worst_pred, float(d_pred))
            worst_pooled = max(worst_pooled, float(d_pool))
    return worst_pred, worst_pooled


@pytest.mark.parametrize(
    "use_aape,fusion",
    [(True, "gated_add"), (True, "concat"), (False, "gated_add")],
    ids=["aape-gated_add", "aape-concat", "plain"],
)
def test_masked_content_never_reaches_the_student(use_aape, fusion):
    pred, pooled = max_view_change(build_student(use_aape, fusion))
    assert pred <= 1e-6 and pooled <= 1e-6, (pred, pooled)


@pytest.mark.parametrize("fusion", ["gated_add", "concat"])
def test_clip_stem_input_leaks_and_the_test_sees_it(fusion):
    """The ablation: AaPE on the whole clip lets masked content through."""
    pred, pooled = max_view_change(build_student(True, fusion, stem_input="clip"))
    assert pred > 1e-3 and pooled > 1e-3, (pred, pooled)


def test_plain_stem_is_local_so_clip_input_does_not_leak():
    pred, pooled = max_view_change(build_student(False, stem_input="clip"))
    assert pred <= 1e-6 and pooled <= 1e-6, (pred, pooled)


def test_view_and_clip_inputs_agree_for_the_plain_stem():
    g = torch.Generator().manual_seed(2)
    feats = torch.randn(2, T, F, generator=g)
    visible, masked = multi_mask(2, 40, M, 0.7, generator=g)
    with torch.no_grad():
        a = build_student(False)(feats, visible, masked)
        b = build_student(False, stem_input="clip")(feats, visible, masked)
    assert torch.allclose(a.pred, b.pred, atol=1e-6)


def test_views_see_their_visible_patches():
    """The view path is not blind: changing a *visible* patch changes the view."""
    student = build_student(True)
    g = torch.Generator().manual_seed(3)
    feats = torch.randn(1, T, F, generator=g)
    visible, masked = multi_mask(1, 40, M, 0.7, generator=g)
    with torch.no_grad():
        ref = student(feats, visible, masked)
        out = student(overwrite_masked(feats, visible[:, 0], T // PT, seed=9), visible, masked)
    assert float((out.pooled[:, 0] - ref.pooled[:, 0]).abs().max()) > 1e-3


def test_unknown_stem_input_is_refused_by_key():
    with pytest.raises(ValueError, match="student_stem_input"):
        MaskedStudent(build_student(True).encoder, None, stem_input="whole")
