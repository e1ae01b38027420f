"""Smoke tests: every benchmark script runs at the tiniest settings and ends
with its documented last line. No timing is asserted."""

import os
import pathlib
import re
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
BENCH = ROOT / "benchmarks"

# A model small enough that a step takes milliseconds.
TINY_SET = [
    "embed_dim=32",
    "depth=1",
    "num_heads=2",
    "predictor_dim=32",
    "predictor_depth=1",
    "predictor_heads=2",
    "aape_modes=4",
    "crop_frames=64",
]
FLOAT = r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?|nan|inf"


def set_args():
    return [a for kv in TINY_SET for a in ("--set", kv)]


def run(script, *args):
    env = dict(os.environ)
    env.setdefault("OMP_NUM_THREADS", "1")
    proc = subprocess.run(
        [sys.executable, str(BENCH / script), *args, "--threads", "1"],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=str(ROOT),
        env=env,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    lines = [line for line in proc.stdout.splitlines() if line.strip()]
    assert lines, proc.stderr[-3000:]
    return proc.stdout, lines[-1]


@pytest.mark.parametrize("extra", [[], ["--no-aape", "--masks", "1", "--teacher-input", "full"]])
def test_pretrain_step_prints_median(extra):
    out, last = run(
        "pretrain_step.py", "--config", "tiny", "--batch", "2", "--steps", "2",
        "--warmup", "1", *extra, *set_args(),
    )
    assert re.fullmatch(rf"median_step_ms=(?:{FLOAT})", last), last
    assert float(last.split("=")[1]) > 0
    assert "peak_memory_mb=" in out


def test_compare_prints_summary():
    out, last = run(
        "compare.py", "--configs", "tiny", "--aape-configs", "tiny",
        "--teacher-masks", "1", "2", "--teacher-batch", "2",
        "--teacher-reps", "1", "--infer-configs", "tiny", "--infer-batch", "1",
        "--infer-seconds", "1.5", "--data-clips", "4", "--data-batches", "1",
        "--tiny-batch", "2", "--batch", "2", "--reps", "1", "--warmup", "0",
        "--micro-reps", "1", "--no-memory", *set_args(),
    )
    assert last.startswith("summary "), last
    pairs = dict(kv.split("=") for kv in last.split()[1:])
    for key in (
        "step_tiny_over_tiny",
        "aape_extra_step_tiny",
        "aape_extra_stem_est_tiny",
        "full_over_masked_step_m1",
        "full_over_masked_teacher_m2",
        "infer_clips_per_s_tiny",
        "shards_over_tiny_step",
        "audio_over_tiny_step",
    ):
        assert re.fullmatch(FLOAT, pairs[key]), (key, last)
    for section in ("scale", "aape", "teacher", "inference", "data"):
        assert f"== {section}" in out


def test_textbook_prints_ratio():
    _, last = run(
        "textbook_m2d.py", "--config", "tiny", "--batch", "2", "--reps", "1",
        "--warmup", "0", *set_args(),
    )
    assert re.fullmatch(rf"ratio_ours_over_textbook=(?:{FLOAT})", last), last
    assert float(last.split("=")[1]) > 0


def test_inference_prints_summary():
    out, last = run(
        "inference.py", "--configs", "tiny", "--batch", "1", "--seconds", "7",
        "--reps", "1", "--warmup", "0", "--cli-clips", "2", "--cli-max-seconds", "1.5",
        "--set", "embed_dim=32", "--set", "depth=1", "--set", "num_heads=2",
        "--set", "aape_modes=4",
    )
    assert last.startswith("summary "), last
    pairs = dict(kv.split("=") for kv in last.split()[1:])
    for key in ("clips_per_s_ratio_tiny", "clips_per_s_ratio_aape_tiny", "cli_clips_per_s_tiny"):
        assert re.fullmatch(FLOAT, pairs[key]), (key, last)
    assert "max |ours - textbook| = 0" in out or "e-0" in out


def test_data_scale_prints_summary():
    _, last = run(
        "data_scale.py", "--files", "300", "--index-clips", "20000", "--read-clips", "100",
        "--read-items", "200", "--reps", "1",
    )
    assert last.startswith("summary "), last
