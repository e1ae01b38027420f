"""Evaluation: metrics, linear evaluation (EVAR protocol), aliasing stability.

- :mod:`~aasp_sb.evaluation.metrics`: accuracy, mAP, ``MultiLabelStats``,
  mean ± 95% CI, RankMe;
- :mod:`~aasp_sb.evaluation.linear_probe`: scaler, linear probe with early
  stopping, fold / seed aggregation, result tables;
- :mod:`~aasp_sb.evaluation.stability`: input shifts and the shift cosine
  similarity of embeddings.
"""

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
from aasp_sb.evaluation.stability import (
    measure_shift_stability,
    shift_cosine_similarity,
    shift_features,
    shift_waveform,
    stability_report,
)

__all__ = [
    "MultiLabelStats",
    "StandardScaler",
    "accuracy",
    "average_precision",
    "class_complete_split",
    "evaluate_probe",
    "format_mean_ci",
    "mean_average_precision",
    "mean_ci95",
    "measure_shift_stability",
    "per_class_accuracy",
    "rankme",
    "results_table",
    "run_linear_eval",
    "shift_cosine_similarity",
    "shift_features",
    "shift_waveform",
    "stability_report",
    "summarize_folds",
    "train_linear_probe",
    "write_results",
]
