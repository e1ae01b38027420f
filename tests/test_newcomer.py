"""A newcomer's path: exit codes, refusals and one-line messages."""

import json
import pathlib
import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf
from pretrain_utils import ROOT, TINY, load_recipe, recipe_args
from pretrained_fixture import make_run

from aasp_sb.recipe_import import import_recipe

BIN = pathlib.Path(sys.executable).parent
ENV = {"OMP_NUM_THREADS": "1", "PATH": f"{BIN}:/usr/bin:/bin", "HOME": "/tmp"}


def write_clips(folder, count, seconds=1.2, seed=0):
    folder = pathlib.Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    paths = []
    for i in range(count):
        path = folder / f"clip{i}.wav"
        sf.write(str(path), (0.1 * rng.standard_normal(int(seconds * 16000))).astype("float32"), 16000)
        paths.append(path)
    return paths


def call(cmd, **kwargs):
    proc = subprocess.run(
        [str(c) for c in cmd], capture_output=True, text=True, timeout=300,
        env=ENV, cwd=kwargs.pop("cwd", ROOT), **kwargs,
    )
    return proc


def test_installed_console_scripts_exit_zero(tmp_path):
    """aasp-embed, aasp-stability, aasp-plots, aasp-shards: rc 0 after a successful run."""
    run = make_run(tmp_path / "run")
    clips = write_clips(tmp_path / "audio", 2)
    csv = tmp_path / "clips.csv"
    csv.write_text("ID,duration,wav\n" + "".join(f"c{i},1.2,{p}\n" for i, p in enumerate(clips)))
    for script in ("aasp-embed", "aasp-stability", "aasp-plots", "aasp-shards"):
        assert (BIN / script).is_file(), f"{script} is not installed (pip install -e .)"

    proc = call([BIN / "aasp-embed", "--checkpoint", run, "--csv", csv,
                 "--output", tmp_path / "e.npy", "--device", "cpu", "--no-progress"])
    assert proc.returncode == 0, proc.stderr
    assert "wrote 2 x 160 embeddings" in proc.stderr
    assert "{'output'" not in proc.stderr  # no result dict printed by sys.exit

    stab = tmp_path / "stability.json"
    proc = call([BIN / "aasp-stability", "--checkpoint", run, "--csv", csv,
                 "--shifts", "1,2", "--seconds", "0.6", "--json", stab])
    assert proc.returncode == 0, proc.stderr
    assert json.loads(stab.read_text())["shifts"] == [1, 2]
    assert "{'csv'" not in proc.stderr

    proc = call([BIN / "aasp-plots", "--run", run, "--stability", stab,
                 "--output-dir", tmp_path / "plots", "--csv", csv, "--max-clips", "2"])
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "plots" / "stability.png").is_file()
    assert "['" not in proc.stderr  # no list printed by sys.exit
    for out in (proc.stdout, proc.stderr):
        assert "torchvision is not available" not in out

    proc = call([BIN / "aasp-shards", "--csv", csv, "--output", tmp_path / "shards"])
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "shards" / "index.npy").is_file()


def test_stability_module_runs_without_runtime_warning():
    proc = call([sys.executable, "-W", "error::RuntimeWarning", "-m",
                 "aasp_sb.analysis.stability", "--help"])
    assert proc.returncode == 0, proc.stderr
    assert "found in sys.modules" not in proc.stderr
    assert "torchvision is not available" not in proc.stderr


def test_pretraining_refuses_zero_steps(tmp_path):
    """Fewer training clips than batch_size with drop_last: refuse, say what to change."""
    write_clips(tmp_path / "audio", 3)
    args = recipe_args(tmp_path / "audio", tmp_path / "out", batch_size=16)
    with pytest.raises(SystemExit) as exc:
        load_recipe().main(args)
    msg = str(exc.value.code)
    assert "only 2 training clip(s)" in msg and "batch_size=16" in msg, msg
    assert "--batch_size=2" in msg and "--valid_fraction=0" in msg, msg
    assert "\n" not in msg
    assert not list((tmp_path / "out").glob("save/CKPT+*"))  # nothing trained or saved


def test_one_clip_names_valid_fraction_zero(tmp_path):
    write_clips(tmp_path / "audio", 1)
    with pytest.raises(SystemExit) as exc:
        load_recipe().main(recipe_args(tmp_path / "audio", tmp_path / "out"))
    msg = str(exc.value.code)
    assert "leaves no training clips out of 1" in msg and "--valid_fraction=0" in msg, msg


def test_missing_data_folder_leaves_nothing_behind(tmp_path):
    out = tmp_path / "out"
    with pytest.raises(SystemExit) as exc:
        load_recipe().main(recipe_args(tmp_path / "no_such_folder", out))
    assert str(exc.value.code) == (
        f"train.py: error: --data_folder={tmp_path / 'no_such_folder'}: "
        "the folder does not exist"
    )
    assert not out.exists()


RECIPES = {
    "pretrain": (ROOT / "recipes/pretrain/train.py", [str(TINY), "--data_folder=/tmp"],
                 "batchsize", "batch_size"),
    "finetune": (ROOT / "recipes/finetune/train.py",
                 [str(ROOT / "hparams/finetune/demo.yaml"), "--data_folder=/tmp"],
                 "batchsize", "batch_size"),
    "linear_eval": (ROOT / "recipes/linear_eval/evaluate.py",
                    [str(ROOT / "hparams/linear_eval/evar.yaml")],
                    "max_epoch", "max_epochs"),
    "compare_init": (ROOT / "recipes/finetune/compare_init.py",
                     ["--pretrained_path=/tmp", "--corpus=/tmp"],
                     "number_of_epoch", "number_of_epochs"),
}


@pytest.mark.parametrize("name", sorted(RECIPES))
def test_unknown_override_is_one_line_with_a_suggestion(name, tmp_path):
    path, args, wrong, right = RECIPES[name]
    out = tmp_path / "out"
    recipe = import_recipe(path, f"newcomer_{name}")
    with pytest.raises(SystemExit) as exc:
        recipe.main([*args, f"--output_folder={out}", f"--{wrong}=4"])
    msg = str(exc.value.code)
    assert msg.endswith(f"unknown override --{wrong}; did you mean --{right}?"), msg
    assert "\n" not in msg
    assert not out.exists()


def test_demo_unknown_option_suggests(tmp_path, capsys):
    demo = import_recipe(ROOT / "recipes/demo/run_demo.py", "newcomer_demo")
    with pytest.raises(SystemExit) as exc:
        demo.main([f"--output_folder={tmp_path / 'out'}", "--perclass=3"])
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].endswith("unknown option --perclass; did you mean --per_class?")
    assert not (tmp_path / "out").exists()



def test_console_scripts_bad_input_is_one_line(tmp_path):
    from aasp_sb.analysis import plots, stability

    missing = tmp_path / "no_run"
    with pytest.raises(SystemExit) as exc:
        stability.main(["--checkpoint", str(missing), "--csv", str(tmp_path / "x.csv")])
    assert str(exc.value.code).startswith("aasp-stability: error: ")
    assert str(missing) in str(exc.value.code) and "\n" not in str(exc.value.code)
    with pytest.raises(SystemExit) as exc:
        plots.main(["--run", str(missing)])
    assert str(exc.value.code) == f"aasp-plots: error: --run {missing}: no such folder or file"


def test_embedding_names_say_which_is_which(tmp_path):
    import torch

    from aasp_sb.analysis.stability import embed_waveforms
    from aasp_sb.inference import AaSPEncoder

    enc = AaSPEncoder.from_run(make_run(tmp_path / "run"), device="cpu")
    wavs = 0.1 * torch.randn(2, 12000)
    stacked = enc.frame_mean_embeddings(wavs)
    assert stacked.shape == (2, enc.frame_feature_size) == (2, 5 * 32)
    assert torch.equal(stacked, enc.embed_batch(wavs))  # the old name still works
    tokens = enc.token_mean_embeddings(wavs)
    assert tokens.shape == (2, enc.encoder.embed_dim)
    ref = embed_waveforms(enc.features, enc.encoder, wavs, torch.tensor([12000, 12000]))
    assert torch.allclose(tokens, ref, atol=1e-5)


def test_linear_eval_missing_task_folder_leaves_nothing_behind(tmp_path):
    recipe = import_recipe(ROOT / "recipes/linear_eval/evaluate.py", "newcomer_le")
    out = tmp_path / "out"
    with pytest.raises(SystemExit) as exc:
        recipe.main([
            str(ROOT / "hparams/linear_eval/evar.yaml"), "--tasks=esc50",
            f"--esc50_folder={tmp_path / 'nope'}", "--random_init=True",
            f"--model_hparams={TINY}", f"--output_folder={out}",
        ])
    assert str(exc.value.code) == (
        f"evaluate.py: error: --esc50_folder={tmp_path / 'nope'}: the folder does not exist"
    )
    assert not out.exists()


def test_finetuning_a_missing_data_folder_fails_in_one_line(tmp_path):
    proc = call([sys.executable, ROOT / "recipes" / "finetune" / "train.py",
                 ROOT / "hparams" / "finetune" / "esc50.yaml", f"--data_folder={tmp_path / 'nope'}",
                 f"--output_folder={tmp_path / 'out'}", "--device=cpu"])
    assert proc.returncode != 0
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("train.py: error:") and "nope" in last, proc.stderr[-1500:]
    assert "Traceback" not in proc.stderr
