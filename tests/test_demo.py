"""`make demo`'s script runs end to end (shrunk: few clips, one epoch, one probe seed)."""

import json

from pretrain_utils import ROOT

from aasp_sb.recipe_import import import_recipe


def test_demo_script_writes_results_table(tmp_path):
    demo = import_recipe(ROOT / "recipes" / "demo" / "run_demo.py", "run_demo")
    scores = demo.main([
        f"--output_folder={tmp_path}", "--epochs=1", "--per_class=5", "--seeds=1",
        "--skip_ablation",
    ])
    assert set(scores) == {"AaSP (AaPE)", "random init (AaPE)"}
    report = (tmp_path / "RESULTS.md").read_text()
    assert "| AaSP (AaPE) |" in report and "| random init (AaPE) |" in report
    assert "RankMe" in report


def test_demo_finetune_comparison_runs_both_label_settings_and_the_ablation(tmp_path):
    demo = import_recipe(ROOT / "recipes" / "demo" / "run_demo.py", "run_demo")
    demo.main([f"--output_folder={tmp_path}", "--epochs=1", "--per_class=5", "--seeds=1"])
    tiny = {"number_of_epochs": 1, "warmup_epochs": 0, "batch_size": 4,
            "crop_seconds": 0.5}
    runs = {"AaSP (AaPE)": tmp_path / "pretrain_aasp", "plain stem": tmp_path / "pretrain_plain"}
    lines = demo.finetune_comparison(
        runs, tmp_path / "corpus", tmp_path / "ft", labels_per_class=1, overrides=tiny,
    )
    assert lines[2].startswith("| AaSP (AaPE) | all training clips, 1 epochs |")
    assert lines[3].startswith("| AaSP (AaPE) | 1 clips per class, 1 epochs |")
    assert lines[4].startswith("| plain stem | all training clips, 1 epochs |")
    for setting, per_class in (("aasp_aape_all", None), ("aasp_aape_few", 1),
                               ("plain_stem_all", None)):
        record = json.loads((tmp_path / "ft" / setting / "compare.json").read_text())
        assert record["labels_per_class"] == per_class
        assert 0.0 <= record["pretrained"] <= 1.0 and 0.0 <= record["random"] <= 1.0
    plain = (tmp_path / "ft" / "plain_stem_all" / "random" / "hyperparams.yaml").read_text()
    assert "use_aape: false" in plain  # the ablation's random arm is a plain-stem model
    few_train = (tmp_path / "ft" / "aasp_aape_few" / "corpus" / "train.csv").read_text()
    assert len(few_train.splitlines()) == 1 + 8  # header + one clip of each of the 8 classes
