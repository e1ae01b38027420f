"""`make demo`'s script runs end to end (shrunk: few clips, one epoch, one probe seed)."""

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
