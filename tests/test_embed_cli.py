"""aasp-embed: manifest order, relative paths, random init, skipped clips."""

import logging
import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf
from pretrained_fixture import TINY_YAML, make_run
from task_fixtures import write_corrupt

from aasp_sb import embed
from aasp_sb.embed import main
from aasp_sb.inference import AaSPEncoder

TINY = "{embed_dim: 32, depth: 1, num_heads: 2, crop_frames: 64, aape_modes: 4}"


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    return make_run(tmp_path_factory.mktemp("run"))


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """Clips of different lengths and rates; the manifest uses relative paths."""
    root = tmp_path_factory.mktemp("corpus")
    (root / "audio").mkdir()
    rng = np.random.default_rng(0)
    specs = [("c", 0.9, 16000), ("a", 0.3, 22050), ("b", 1.7, 16000), ("d", 0.5, 8000)]
    rows = ["ID,duration,wav,label"]
    for name, sec, sr in specs:
        data = (0.1 * rng.standard_normal(int(sec * sr))).astype("float32")
        sf.write(str(root / "audio" / f"{name}.wav"), data, sr)
        rows.append(f"{name},{sec},audio/{name}.wav,x")
    (root / "clips.csv").write_text("\n".join(rows) + "\n")
    return root


def test_writes_manifest_order_with_relative_paths(run, corpus, tmp_path):
    out = tmp_path / "emb.npy"
    info = embed.run([
        "--checkpoint", str(run), "--csv", str(corpus / "clips.csv"),
        "--output", str(out), "--batch-size", "3", "--device", "cpu",
    ])
    emb = np.load(out)
    assert emb.dtype == np.float32 and emb.shape == (4, 160)
    assert info["num_skipped"] == 0 and info["skipped"] is None
    assert (tmp_path / "emb.ids.txt").read_text().split() == ["c", "a", "b", "d"]
    assert not (tmp_path / "emb.skipped.txt").exists()
    model = AaSPEncoder.from_run(run, device="cpu")
    for i, name in enumerate(["c", "a", "b", "d"]):
        ref = model.embed_file(str(corpus / "audio" / f"{name}.wav")).numpy()
        np.testing.assert_allclose(emb[i], ref, atol=1e-5)


def test_corrupt_clip_is_skipped_and_logged(run, corpus, tmp_path, caplog):
    write_corrupt(corpus / "audio" / "bad.wav")
    csv = tmp_path / "with_bad.csv"
    lines = (corpus / "clips.csv").read_text().splitlines()
    lines.insert(2, f"bad,1.0,{corpus / 'audio' / 'bad.wav'},x")  # absolute path
    lines = [ln.replace("audio/", f"{corpus}/audio/") for ln in lines]
    csv.write_text("\n".join(lines) + "\n")
    out = tmp_path / "emb.npy"
    with caplog.at_level(logging.WARNING):
        info = embed.run([
            "--checkpoint", str(run), "--csv", str(csv), "--output", str(out),
            "--device", "cpu", "--no-progress",
        ])
    emb = np.load(out)
    assert emb.shape == (5, 160) and info["num_skipped"] == 1
    assert np.isnan(emb[1]).all() and np.isfinite(np.delete(emb, 1, axis=0)).all()
    skipped = (tmp_path / "emb.skipped.txt").read_text().splitlines()
    assert len(skipped) == 1 and skipped[0].startswith("1\tbad\t")
    assert str(corpus / "audio" / "bad.wav") in skipped[0]
    assert "bad.wav" in caplog.text


def test_nothing_readable_is_an_error(run, tmp_path, capsys):
    bad = write_corrupt(tmp_path / "x.wav")
    csv = tmp_path / "m.csv"
    csv.write_text(f"ID,wav\nx,{bad}\n")
    with pytest.raises(SystemExit) as exc:
        main([
            "--checkpoint", str(run), "--csv", str(csv), "--output",
            str(tmp_path / "e.npy"), "--device", "cpu", "--no-progress",
        ])
    assert exc.value.code == 1
    assert "none of the 1 clips could be read" in capsys.readouterr().err
    assert not (tmp_path / "e.npy").exists()


def test_random_init_layers_pooling_and_max_seconds(corpus, tmp_path):
    out = tmp_path / "rand.npy"
    args = [
        "--hparams", str(TINY_YAML), "--overrides", TINY, "--random-init",
        "--csv", str(corpus / "clips.csv"), "--output", str(out),
        "--device", "cpu", "--no-progress",
    ]
    main(args + ["--seed", "3"])
    a = np.load(out)
    main(args + ["--seed", "3"])
    assert a.shape == (4, 160) and np.array_equal(a, np.load(out))
    main(args + ["--seed", "4"])
    assert not np.allclose(a, np.load(out))
    main(args + ["--pooling", "mean+max", "--max-seconds", "0.5"])
    assert np.load(out).shape == (4, 320)
    with pytest.raises(SystemExit):
        main(args + ["--layer", "3"])  # depth 1


def test_module_entry_point(run, corpus, tmp_path):
    out = tmp_path / "cli.npy"
    proc = subprocess.run(
        [sys.executable, "-m", "aasp_sb.embed", "--checkpoint", str(run),
         "--csv", str(corpus / "clips.csv"), "--output", str(out),
         "--device", "cpu", "--no-progress"],
        capture_output=True, text=True, timeout=300,
        env={"OMP_NUM_THREADS": "2", "PATH": "/usr/bin:/bin"},
    )
    assert proc.returncode == 0, proc.stderr
    assert "wrote 4 x 160 embeddings" in proc.stderr
    assert np.load(out).shape == (4, 160)


def test_requires_a_model(tmp_path):
    with pytest.raises(SystemExit):
        main(["--csv", "x.csv", "--output", str(tmp_path / "o.npy")])


def test_main_returns_exit_status_zero(run, corpus, tmp_path):
    status = main([
        "--checkpoint", str(run), "--csv", str(corpus / "clips.csv"),
        "--output", str(tmp_path / "e.npy"), "--device", "cpu", "--no-progress",
    ])
    assert status == 0 and np.load(tmp_path / "e.npy").shape == (4, 160)


def test_missing_file_is_named_as_missing(run, corpus, tmp_path, caplog):
    csv = tmp_path / "m.csv"
    csv.write_text(
        f"ID,wav\nc,{corpus / 'audio' / 'c.wav'}\ngone,{tmp_path / 'gone.wav'}\n"
    )
    out = tmp_path / "e.npy"
    with caplog.at_level(logging.WARNING):
        info = embed.run([
            "--checkpoint", str(run), "--csv", str(csv), "--output", str(out),
            "--device", "cpu", "--no-progress",
        ])
    assert info["num_skipped"] == 1
    line = (tmp_path / "e.skipped.txt").read_text().strip()
    assert line.endswith("\tfile does not exist"), line
    assert "System error" not in caplog.text and "file does not exist" in caplog.text
