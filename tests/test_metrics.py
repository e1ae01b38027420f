"""Tests for aasp_sb.evaluation.metrics."""

import io
import math

import numpy as np
import pytest
import torch
from scipy import stats

from aasp_sb.evaluation.metrics import (
    MultiLabelStats,
    accuracy,
    average_precision,
    format_mean_ci,
    mean_average_precision,
    mean_ci95,
    per_class_accuracy,
    rankme,
)


def reference_ap(scores, targets):
    """Brute-force AP, literally sklearn's definition.

    For each distinct threshold (descending), predict positive everything
    scoring >= threshold; AP = sum_k (R_k - R_{k-1}) * P_k with R_0 = 0.
    """
    scores = np.asarray(scores, dtype=float)
    targets = np.asarray(targets) > 0.5
    n_pos = targets.sum()
    if n_pos == 0:
        return float("nan")
    ap, prev_recall = 0.0, 0.0
    for thr in sorted(set(scores.tolist()), reverse=True):
        predicted = scores >= thr
        tp = (predicted & targets).sum()
        precision = tp / predicted.sum()
        recall = tp / n_pos
        ap += (recall - prev_recall) * precision
        prev_recall = recall
    return ap


# A hand-worked example: three classes, five samples.
SCORES = torch.tensor(
    [
        [0.9, 0.5, 0.3],
        [0.8, 0.5, 0.1],
        [0.7, 0.5, 0.2],
        [0.6, 0.2, 0.4],
        [0.5, 0.1, 0.9],
    ]
)
TARGETS = torch.tensor(
    [
        [1, 0, 0],
        [0, 1, 0],
        [1, 1, 0],
        [0, 0, 0],
        [1, 1, 0],
    ]
)


def test_ap_hand_computed():
    # Class 0, scores 0.9 0.8 0.7 0.6 0.5 with targets 1 0 1 0 1 (3 positives):
    #   thr 0.9: P = 1/1, R = 1/3  -> (1/3 - 0)   * 1   = 1/3
    #   thr 0.8: P = 1/2, R = 1/3  -> 0
    #   thr 0.7: P = 2/3, R = 2/3  -> (2/3 - 1/3) * 2/3 = 2/9
    #   thr 0.6: P = 2/4, R = 2/3  -> 0
    #   thr 0.5: P = 3/5, R = 3/3  -> (1 - 2/3)   * 3/5 = 1/5
    #   AP0 = 1/3 + 2/9 + 1/5 = (15 + 10 + 9) / 45 = 34/45
    # Class 1, scores 0.5 0.5 0.5 0.2 0.1 with targets 0 1 1 0 1: the three
    # tied scores form ONE threshold (no credit for the order inside a tie):
    #   thr 0.5: P = 2/3, R = 2/3  -> 2/3 * 2/3 = 4/9
    #   thr 0.2: P = 2/4, R = 2/3  -> 0
    #   thr 0.1: P = 3/5, R = 1    -> 1/3 * 3/5 = 1/5
    #   AP1 = 4/9 + 1/5 = 29/45
    # Class 2 has no positives: excluded, reported, AP = nan.
    # mAP = (34/45 + 29/45) / 2 = 63/90 = 0.7
    ap = average_precision(SCORES, TARGETS)
    assert ap[0].item() == pytest.approx(34 / 45, abs=1e-12)
    assert ap[1].item() == pytest.approx(29 / 45, abs=1e-12)
    assert math.isnan(ap[2].item())
    m, per_class, excluded = mean_average_precision(
        SCORES, TARGETS, return_per_class=True
    )
    assert m == pytest.approx(0.7, abs=1e-12)
    assert excluded == [2]
    assert torch.equal(per_class.isnan(), ap.isnan())
    for c in range(2):
        assert ap[c].item() == pytest.approx(
            reference_ap(SCORES[:, c], TARGETS[:, c]), abs=1e-12
        )


def test_ap_excluded_class_is_logged(caplog):
    with caplog.at_level("WARNING"):
        mean_average_precision(SCORES, TARGETS)
    assert "no positive target" in caplog.text


def test_ap_ties_do_not_depend_on_row_order():
    perm = torch.tensor([4, 2, 0, 3, 1])
    a = average_precision(SCORES, TARGETS)
    b = average_precision(SCORES[perm], TARGETS[perm])
    torch.testing.assert_close(a, b, equal_nan=True)
    # Reversing the order inside the tie of class 1 changes nothing either.
    s = SCORES[[2, 1, 0, 3, 4]]
    y = TARGETS[[2, 1, 0, 3, 4]]
    torch.testing.assert_close(average_precision(s, y), a, equal_nan=True)


def test_ap_all_tied_equals_prevalence():
    scores = torch.zeros(8, 1)
    targets = torch.tensor([[1], [0], [0], [1], [0], [0], [0], [1]])
    # One threshold: P = 3/8 at R = 1.
    assert average_precision(scores, targets).item() == pytest.approx(3 / 8)


def test_ap_perfect_and_worst_ranking():
    targets = torch.tensor([[1], [1], [0], [0]])
    assert average_precision(torch.tensor([[4.0], [3], [2], [1]]), targets).item() == 1.0
    # Positives last: P = 1/3 at R = 1/2, P = 2/4 at R = 1.
    worst = average_precision(torch.tensor([[1.0], [2], [3], [4]]), targets)
    assert worst.item() == pytest.approx(0.5 * 1 / 3 + 0.5 * 2 / 4)


def test_ap_matches_bruteforce_random_with_ties():
    g = torch.Generator().manual_seed(1)
    scores = torch.randint(0, 6, (60, 7), generator=g).float() / 5  # many ties
    targets = (torch.rand(60, 7, generator=g) < 0.3).long()
    targets[:, 3] = 0  # one class without positives
    ap = average_precision(scores, targets)
    for c in range(7):
        ref = reference_ap(scores[:, c], targets[:, c])
        if math.isnan(ref):
            assert math.isnan(ap[c].item())
        else:
            assert ap[c].item() == pytest.approx(ref, abs=1e-12)
    assert mean_average_precision(scores, targets) == pytest.approx(
        np.nanmean(ap.numpy())
    )


def test_map_accepts_numpy_and_soft_targets():
    m1 = mean_average_precision(SCORES.numpy(), TARGETS.numpy())
    m2 = mean_average_precision(SCORES, TARGETS.float() * 0.9)  # > 0.5 -> positive
    assert m1 == pytest.approx(0.7) and m2 == pytest.approx(0.7)


def test_map_no_positive_anywhere_is_nan():
    assert math.isnan(mean_average_precision(torch.rand(4, 3), torch.zeros(4, 3)))


def test_map_shape_mismatch_raises():
    with pytest.raises(ValueError):
        mean_average_precision(torch.rand(4, 3), torch.zeros(4, 2))


def test_accuracy_variants():
    logits = torch.tensor([[0.1, 0.9], [0.8, 0.2], [0.3, 0.7], [0.6, 0.4]])
    y = torch.tensor([1, 0, 0, 0])
    assert accuracy(logits, y) == 0.75
    assert accuracy(logits.argmax(-1), y) == 0.75
    assert accuracy(logits, torch.nn.functional.one_hot(y, 2)) == 0.75
    assert accuracy(np.array([1, 2]), np.array([1, 2])) == 1.0


def test_per_class_accuracy():
    pred = torch.tensor([0, 0, 1, 1, 1, 2])
    y = torch.tensor([0, 1, 1, 1, 0, 2])
    pca = per_class_accuracy(pred, y, num_classes=4)
    torch.testing.assert_close(
        pca, torch.tensor([0.5, 2 / 3, 1.0, float("nan")], dtype=torch.float64),
        equal_nan=True,
    )
    # Inferred number of classes from logits.
    logits = torch.nn.functional.one_hot(pred, 5).float()
    assert per_class_accuracy(logits, y).numel() == 5


def test_mean_ci95():
    values = [0.70, 0.80, 0.75, 0.78]
    m, hw = mean_ci95(values)
    sd = np.std(values, ddof=1)
    expected = stats.t.ppf(0.975, df=3) * sd / math.sqrt(4)
    assert m == pytest.approx(np.mean(values))
    assert hw == pytest.approx(expected)
    # three values: t_{0.975, 2} = 4.302653
    m, hw = mean_ci95(torch.tensor([0.80, 0.82, 0.84]))
    assert hw == pytest.approx(4.302653 * 0.02 / math.sqrt(3), rel=1e-5)
    # n = 1: undefined width -> nan; n = 0: nan mean
    m, hw = mean_ci95([0.5])
    assert m == 0.5 and math.isnan(hw)
    assert all(math.isnan(v) for v in mean_ci95([]))
    # identical values -> zero width
    assert mean_ci95([0.3, 0.3, 0.3])[1] == pytest.approx(0.0)


def test_format_mean_ci():
    assert format_mean_ci(0.7512, 0.0123) == "75.12 ± 1.23"
    assert format_mean_ci(0.7512, float("nan"), scale=1, digits=3) == "0.751"


def test_rankme():
    assert rankme(torch.eye(6)) == pytest.approx(6.0, rel=1e-5)
    # Rank one (collapse): all rows on one direction.
    z = torch.randn(50, 1) * torch.randn(1, 16)
    assert rankme(z) == pytest.approx(1.0, abs=1e-3)
    # Scale invariant, bounded by min(N, D), drops when dimensions collapse.
    x = torch.randn(200, 16)
    r = rankme(x)
    assert rankme(10 * x) == pytest.approx(r, rel=1e-6)
    assert 12 < r <= 16
    x_collapsed = x.clone()
    x_collapsed[:, 8:] *= 1e-3
    assert rankme(x_collapsed) < 9
    # Two equal singular values -> exactly 2 (up to eps).
    assert rankme(torch.tensor([[3.0, 0.0], [0.0, 3.0], [0.0, 0.0]])) == pytest.approx(2.0, rel=1e-5)
    with pytest.raises(ValueError):
        rankme(torch.randn(3, 4, 5))


def test_multilabel_stats_accumulates():
    stats_ = MultiLabelStats()
    stats_.append(["a", "b"], SCORES[:2], TARGETS[:2])
    stats_.append(["c", "d", "e"], SCORES[2:], TARGETS[2:])
    assert stats_.summarize() == pytest.approx(0.7)
    assert stats_.summarize("num_excluded") == 1
    assert stats_.summarize("excluded") == [2]
    assert stats_.summarize("num_samples") == 5
    assert stats_.ids == ["a", "b", "c", "d", "e"]
    buf = io.StringIO()
    stats_.write_stats(buf)
    text = buf.getvalue()
    assert text.startswith("mAP: 0.700000")
    assert "0,0.755556" in text
    stats_.clear()
    with pytest.raises(ValueError):
        stats_.summarize()


def test_multilabel_stats_shape_check():
    with pytest.raises(ValueError):
        MultiLabelStats().append(["a"], torch.rand(1, 3), torch.zeros(1, 4))
