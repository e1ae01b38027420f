"""`make demo`'s script runs end to end (shrunk: few clips, one epoch, one probe seed)."""

import importlib.util

from pretrain_utils import ROOT


def test_demo_script_writes_results_table(tmp_path):
    spec = importlib.util.spec_from_file_location("run_demo", ROOT / "recipes" / "demo" / "run_demo.py")
    demo = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(demo)
    scores = demo.main([
        f"--output_folder={tmp_path}", "--epochs=1", "--per_class=5", "--seeds=1",
        "--skip_ablation",
    ])
    assert set(scores) == {"AaSP (AaPE)", "random init (AaPE)"}
    report = (tmp_path / "RESULTS.md").read_text()
    assert "| AaSP (AaPE) |" in report and "| random init (AaPE) |" in report
    assert "RankMe" in report
