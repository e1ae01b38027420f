"""Tests for aasp_sb.evaluation.linear_probe (EVAR linear evaluation)."""

import json
import math

import pytest
import torch

from aasp_sb.evaluation.linear_probe import (
    StandardScaler,
    class_complete_split,
    evaluate_probe,
    results_table,
    run_linear_eval,
    summarize_folds,
    train_linear_probe,
    write_results,
)
from aasp_sb.evaluation.metrics import mean_ci95


def gaussian_clusters(n_per_class, num_classes=5, dim=16, seed=0, spread=6.0):
    """Well separated Gaussian clusters (unit variance, far-apart means)."""
    g = torch.Generator().manual_seed(seed)
    means = torch.randn(num_classes, dim, generator=torch.Generator().manual_seed(123))
    means = spread * means / means.norm(dim=1, keepdim=True) * math.sqrt(2)
    y = torch.arange(num_classes).repeat_interleave(n_per_class)
    x = means[y] + torch.randn(len(y), dim, generator=g) + 10.0  # offset: scaler
    return x, y


def test_separable_clusters_near_perfect():
    # Default protocol hyper-parameters (lr 3e-4, patience 20). The
    # validation set must be large enough for early stopping not to stop as
    # soon as it is saturated.
    tr = gaussian_clusters(200, seed=0)
    va = gaussian_clusters(60, seed=1)
    te = gaussian_clusters(100, seed=2)
    model, scaler, hist = train_linear_probe(*tr, *va, num_classes=5)
    assert 1 <= hist["epochs"] <= 200  # EVAR's cap (ties keep a saturated probe going)
    res = evaluate_probe(model, scaler, *te)
    assert res["metric"] == "accuracy"
    assert res["accuracy"] >= 0.98
    assert isinstance(model, torch.nn.Linear) and not model.training


def test_shuffled_labels_give_chance_accuracy():
    # Labels independent of the embeddings: the held-out accuracy must stay
    # near chance 1/C = 0.25. With 800 test samples the std of the accuracy
    # is sqrt(0.25 * 0.75 / 800) ~ 0.015; the band +-0.07 is ~4.5 std.
    num_classes = 4
    x_tr, y_tr = gaussian_clusters(100, num_classes, seed=0)
    x_va, y_va = gaussian_clusters(25, num_classes, seed=1)
    x_te, y_te = gaussian_clusters(200, num_classes, seed=2)
    g = torch.Generator().manual_seed(7)
    y_tr = y_tr[torch.randperm(len(y_tr), generator=g)]
    y_va = y_va[torch.randperm(len(y_va), generator=g)]
    y_te = y_te[torch.randperm(len(y_te), generator=g)]
    model, scaler, _ = train_linear_probe(
        x_tr, y_tr, x_va, y_va, num_classes, max_epochs=50
    )
    acc = evaluate_probe(model, scaler, x_te, y_te)["accuracy"]
    assert abs(acc - 1 / num_classes) < 0.07


def test_early_stopping_restores_best_weights():
    # Noisy, overlapping clusters and a small validation set: the validation
    # score peaks early, then training continues for `patience` epochs.
    tr = gaussian_clusters(30, 3, dim=32, seed=0, spread=0.6)
    va = gaussian_clusters(10, 3, dim=32, seed=1, spread=0.6)
    patience = 5
    model, scaler, hist = train_linear_probe(
        *tr, *va, num_classes=3, lr=3e-2, max_epochs=300, patience=patience
    )
    scores = hist["valid_score"]
    best = max(scores)
    assert hist["best_valid_score"] == best
    # EVAR's tie rule: the latest epoch reaching the best score
    assert hist["best_epoch"] == len(scores) - 1 - scores[::-1].index(best)
    # Stopped early: exactly `patience` epochs without a new best.
    assert hist["epochs"] == hist["best_epoch"] + patience + 1 < 300
    assert len(hist["train_loss"]) == hist["epochs"]
    # The returned model scores the best validation score, not the last one.
    assert evaluate_probe(model, scaler, *va)["score"] == pytest.approx(best)
    assert scores[-1] < best or hist["epochs"] > hist["best_epoch"] + 1


def test_scaler_fit_on_train_only():
    tr_x, tr_y = gaussian_clusters(40, seed=0)
    va_x, va_y = gaussian_clusters(10, seed=1)
    te_x = torch.randn(50, 16) * 5 - 3  # different statistics
    _, scaler, _ = train_linear_probe(
        tr_x, tr_y, va_x * 2 + 1, va_y, num_classes=5, max_epochs=2
    )
    torch.testing.assert_close(scaler.mean, tr_x.mean(0))
    torch.testing.assert_close(scaler.scale, tr_x.std(0, unbiased=False))
    assert not torch.allclose(scaler.mean, te_x.mean(0), atol=0.5)
    assert not torch.allclose(scaler.mean, (va_x * 2 + 1).mean(0), atol=0.5)
    # Evaluating on test uses, and does not refit, the train statistics.
    before = scaler.mean.clone()
    model = torch.nn.Linear(16, 5)
    evaluate_probe(model, scaler, te_x, torch.zeros(50, dtype=torch.long))
    torch.testing.assert_close(scaler.mean, before)


def test_standard_scaler_constant_dim_and_state_dict(tmp_path):
    x = torch.randn(20, 3)
    x[:, 1] = 4.0
    scaler = StandardScaler().fit(x)
    assert scaler.scale[1] == 1.0
    z = scaler(x)
    torch.testing.assert_close(z.mean(0), torch.zeros(3), atol=1e-5, rtol=0)
    torch.testing.assert_close(z[:, [0, 2]].std(0, unbiased=False), torch.ones(2))
    path = tmp_path / "scaler.pt"
    torch.save(scaler.state_dict(), path)
    loaded = StandardScaler()
    loaded.load_state_dict(torch.load(path, weights_only=True))
    torch.testing.assert_close(loaded(x), z)
    torch.testing.assert_close(StandardScaler().fit_transform(x), z)


def test_multilabel_path():
    g = torch.Generator().manual_seed(0)
    n, dim, num_classes = 600, 12, 4
    x = torch.randn(n, dim, generator=g)
    w = torch.randn(dim, num_classes, generator=g)
    y = (x @ w > 0.5).float()  # linearly determined multi-hot labels
    model, scaler, hist = train_linear_probe(
        x[:400], y[:400], x[400:500], y[400:500], num_classes,
        multilabel=True, lr=1e-2, max_epochs=60,
    )
    res = evaluate_probe(model, scaler, x[500:], y[500:], multilabel=True)
    assert res["metric"] == "mAP"
    assert res["mAP"] > 0.9
    assert hist["best_valid_score"] == max(hist["valid_score"])
    out = run_linear_eval(
        [{"name": "s", "train": (x[:400], y[:400]),
          "valid": (x[400:500], y[400:500]), "test": (x[500:], y[500:])}],
        seeds=(0,), multilabel=True, lr=1e-2, max_epochs=5,
    )
    assert out["metric"] == "mAP" and 0 < out["mean"] <= 1


def test_training_is_seeded_and_leaves_global_rng_alone():
    tr = gaussian_clusters(20, seed=0)
    va = gaussian_clusters(5, seed=1)
    state = torch.get_rng_state()
    m1, _, h1 = train_linear_probe(*tr, *va, num_classes=5, max_epochs=3, seed=3)
    assert torch.equal(torch.get_rng_state(), state)
    m2, _, h2 = train_linear_probe(*tr, *va, num_classes=5, max_epochs=3, seed=3)
    torch.testing.assert_close(m1.weight, m2.weight)
    assert h1["train_loss"] == h2["train_loss"]
    m3, _, _ = train_linear_probe(*tr, *va, num_classes=5, max_epochs=3, seed=4)
    assert not torch.allclose(m1.weight, m3.weight)


def test_summarize_folds_arithmetic_and_ci():
    # Two folds x three seeds. Fold averages per seed:
    #   seed 0: (0.8 + 0.6) / 2 = 0.70
    #   seed 1: (0.9 + 0.7) / 2 = 0.80
    #   seed 2: (0.7 + 0.8) / 2 = 0.75
    # mean = 0.75, sample sd = 0.05, t_{0.975, 2} = 4.302653
    # half width = 4.302653 * 0.05 / sqrt(3) = 0.124207
    res = summarize_folds({"f1": [0.8, 0.9, 0.7], "f2": [0.6, 0.7, 0.8]}, [0, 1, 2])
    assert res["per_seed"] == pytest.approx([0.70, 0.80, 0.75])
    assert res["mean"] == pytest.approx(0.75)
    assert res["ci95"] == pytest.approx(4.302653 * 0.05 / math.sqrt(3), rel=1e-6)
    assert res["folds"] == ["f1", "f2"] and res["seeds"] == [0, 1, 2]
    json.dumps(res)  # serialisable
    with pytest.raises(ValueError):
        summarize_folds({"f1": [0.8, 0.9]}, [0, 1, 2])


def test_run_linear_eval_folds_and_seeds():
    folds = []
    for k in range(2):
        folds.append(
            {
                "name": f"fold{k + 1}",
                "train": gaussian_clusters(20, 3, seed=10 * k),
                "valid": gaussian_clusters(5, 3, seed=10 * k + 1),
                "test": gaussian_clusters(10, 3, seed=10 * k + 2),
            }
        )
    res = run_linear_eval(folds, seeds=(0, 1, 2), lr=1e-2, max_epochs=30)
    assert res["folds"] == ["fold1", "fold2"]
    assert res["seeds"] == [0, 1, 2]
    assert all(len(v) == 3 for v in res["per_fold"].values())
    assert all(len(v) == 3 for v in res["best_epochs"].values())
    for i in range(3):
        assert res["per_seed"][i] == pytest.approx(
            (res["per_fold"]["fold1"][i] + res["per_fold"]["fold2"][i]) / 2
        )
    m, hw = mean_ci95(res["per_seed"])
    assert res["mean"] == pytest.approx(m)
    assert (math.isnan(hw) and math.isnan(res["ci95"])) or res["ci95"] == pytest.approx(hw)
    assert res["mean"] > 0.9
    with pytest.raises(ValueError):
        run_linear_eval([folds[0], folds[0]], seeds=(0,))


def test_class_complete_split():
    y = torch.tensor([0] * 30 + [1] * 7 + [2] * 2 + [3])
    tr, va = class_complete_split(y, 0.1, seed=0)
    assert set(y[va].tolist()) == {0, 1, 2}  # class 3 has a single sample
    assert len(set(tr.tolist()) & set(va.tolist())) == 0
    assert sorted(tr.tolist() + va.tolist()) == list(range(len(y)))
    counts = torch.bincount(y[va], minlength=4).tolist()
    assert counts == [3, 1, 1, 0]
    tr2, va2 = class_complete_split(y, 0.1, seed=1)
    assert not torch.equal(va, va2)


def test_results_table_and_writer(tmp_path):
    results = {
        "esc50": summarize_folds({"f1": [0.8, 0.9, 0.7], "f2": [0.6, 0.7, 0.8]}, [0, 1, 2]),
        "spcv2": summarize_folds({"test": [0.9]}, [0]),
    }
    md = results_table(results)
    lines = md.splitlines()
    assert lines[0] == "| task | metric | score | mean | ci95 | folds | seeds |"
    assert lines[2] == "| esc50 | accuracy | 75.00 ± 12.42 | 75.00 | 12.42 | 2 | 3 |"
    assert lines[3] == "| spcv2 | accuracy | 90.00 | 90.00 |  | 1 | 1 |"
    assert lines[4].startswith("| average of 2 (esc50, spcv2) |  | 82.50 |")
    csv_text = results_table(results, fmt="csv", average=False)
    assert csv_text.splitlines()[1] == "esc50,accuracy,75.00 ± 12.42,75.00,12.42,2,3"
    assert len(csv_text.splitlines()) == 3
    with pytest.raises(ValueError):
        results_table(results, fmt="xlsx")
    p = write_results(results, str(tmp_path / "out" / "le.md"))
    assert open(p, encoding="utf-8").read().strip() == md
    p = write_results(results, str(tmp_path / "le.json"))
    assert json.load(open(p))["esc50"]["mean"] == pytest.approx(0.75)


def test_multilabel_validation_warns_once_and_rejects_empty(caplog):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(60, 4, generator=g)
    y = torch.zeros(60, 3)
    y[:, 0] = (x[:, 0] > 0).float()
    y[:, 1] = (x[:, 1] > 0).float()  # class 2 never positive
    with caplog.at_level("WARNING"):
        train_linear_probe(
            x, y, x, y, 3, multilabel=True, max_epochs=10, patience=100
        )
    assert caplog.text.count("no positive target") == 1
    with pytest.raises(ValueError):
        train_linear_probe(x, y, x, torch.zeros(60, 3), 3, multilabel=True)
