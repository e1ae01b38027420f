"""Preparation as its own step: parallel, incremental, read back by the recipe."""

import json
import os

import numpy as np
import pytest
import soundfile as sf

from aasp_sb.data import folder as folder_mod
from aasp_sb.data.folder import HeaderCache, read_csv
from aasp_sb.data.prepare import load_prepared, main, prepare_corpus
from aasp_sb.data.shards import LogMelShardDataset


def _wav(path, samples, sr=16000):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    x = 0.1 * np.random.default_rng(samples).standard_normal(samples)
    sf.write(path, x.astype(np.float32), sr)


@pytest.fixture
def corpus(tmp_path):
    root = tmp_path / "audio"
    for i in range(12):
        _wav(str(root / f"d{i % 3}" / f"c{i:02d}.wav"), 800 + 100 * i)
    with open(root / "d0" / "broken.wav", "wb") as f:
        f.write(b"RIFF not a wave file" * 5)
    return root


def _count_reads(monkeypatch):
    """Records the paths whose header is read (in this process)."""
    seen = []
    real = folder_mod.audio_info

    def spy(path):
        seen.append(os.path.basename(path))
        return real(path)

    monkeypatch.setattr(folder_mod, "audio_info", spy)
    return seen


def test_incremental_prepare_reads_only_new_or_changed_files(
    corpus, tmp_path, monkeypatch
):
    save = str(tmp_path / "prep")
    # First run: 2 processes read all 13 headers.
    first = prepare_corpus(str(corpus), save, valid_clips=2, processes=2)
    assert first["headers_read"] == 13 and first["headers_reused"] == 0
    assert first["num_train"] == 10 and first["num_valid"] == 2
    rows = read_csv(first["train"]) + read_csv(first["valid"])
    assert sorted(r["ID"] for r in rows) == sorted(
        f"d{i % 3}/c{i:02d}" for i in range(12)
    )
    for r in rows:
        assert float(r["duration"]) == pytest.approx(
            sf.info(r["wav"]).frames / 16000, abs=1e-4
        )
    assert "broken.wav" in open(os.path.join(save, "train_skipped.txt")).read()
    train_before = open(first["train"]).read()

    # Unchanged tree: nothing read, same manifests (in one process, spied).
    seen = _count_reads(monkeypatch)
    again = prepare_corpus(str(corpus), save, valid_clips=2, processes=0)
    assert seen == [] and again["headers_read"] == 0
    assert again["headers_reused"] == 13
    assert open(again["train"]).read() == train_before

    # One file added, one rewritten (other size), one deleted: 2 reads.
    _wav(str(corpus / "d1" / "new.wav"), 3000)
    _wav(str(corpus / "d0" / "c03.wav"), 5000)
    os.remove(corpus / "d2" / "c05.wav")
    third = prepare_corpus(str(corpus), save, valid_clips=2, processes=0)
    assert sorted(seen) == ["c03.wav", "new.wav"]
    assert third["headers_read"] == 2 and third["headers_reused"] == 11
    rows = {
        r["ID"]: r for r in read_csv(third["train"]) + read_csv(third["valid"])
    }
    assert "d2/c05" not in rows and "d1/new" in rows
    assert float(rows["d0/c03"]["duration"]) == pytest.approx(5000 / 16000)
    # The cache holds exactly the current files.
    cache = HeaderCache(os.path.join(save, "train_headers.jsonl"))
    assert len(cache.entries) == 13


def test_killed_prepare_keeps_what_it_read(corpus, tmp_path, monkeypatch):
    save = tmp_path / "prep"
    first = prepare_corpus(str(corpus), str(save), processes=0)
    journal = save / "train_headers.jsonl"
    lines = journal.read_text().splitlines()
    # As left by a kill after 5 headers: 5 lines, then a torn one.
    journal.write_text("\n".join(lines[:5]) + "\n" + lines[5][:17])
    seen = _count_reads(monkeypatch)
    again = prepare_corpus(str(corpus), str(save), processes=0)
    assert len(seen) == 8 and again["headers_reused"] == 5
    assert read_csv(again["train"]) == read_csv(first["train"])


def test_parallel_equals_serial_and_load_prepared(corpus, tmp_path):
    a = prepare_corpus(str(corpus), str(tmp_path / "a"), valid_clips=3, processes=2)
    b = prepare_corpus(str(corpus), str(tmp_path / "b"), valid_clips=3, processes=0)
    for key in ("train", "valid"):
        assert read_csv(a[key]) == read_csv(b[key])
    got = load_prepared(str(tmp_path / "a"))
    assert got["train"] == a["train"] and got["valid"] == a["valid"]
    assert got["train_shards"] is None
    with open(a["train"], "a") as f:  # the manifest changed behind its back
        f.write("extra,1.0,/x.wav\n")
    with pytest.raises(ValueError, match="changed since"):
        load_prepared(str(tmp_path / "a" / "prepared.json"))
    with pytest.raises(FileNotFoundError, match="aasp_sb.data.prepare"):
        load_prepared(str(tmp_path / "nothing"))
    with pytest.raises(ValueError, match="not both"):
        prepare_corpus(
            str(corpus), str(tmp_path / "c"), valid_clips=2, valid_fraction=0.1
        )
    with pytest.raises(ValueError, match="source"):
        prepare_corpus(str(corpus), str(tmp_path / "c"), source="youtube")


def test_command_audioset_with_shards(tmp_path, capsys):
    root = tmp_path / "as"
    ids = ["--0bntG9i7E", "--PJHxphWEs", "-0DdlOuIFUI", "-0Gj8-vB1q4"]
    for i, ytid in enumerate(ids):
        _wav(str(root / f"Y{ytid}.wav"), 1600 + 160 * i)
    _wav(str(root / "readme.wav"), 800)  # not a YouTube id: ignored
    save, shards = tmp_path / "prep", tmp_path / "shards"
    record = main(
        [
            "--source", "audioset",
            "--data-folder", str(root),
            "--save-folder", str(save),
            "--valid-clips", "1",
            "--processes", "2",
            "--shard-folder", str(shards),
            "--shard-size", "2",
        ]
    )
    assert "reading headers" in capsys.readouterr().err  # the progress bar
    assert record["num_train"] == 3 and record["num_valid"] == 1
    assert json.load(open(save / "prepared.json")) == record
    got = load_prepared(str(save))
    train = LogMelShardDataset(got["train_shards"], crop_frames=8)
    valid = LogMelShardDataset(got["valid_shards"], crop_frames=8)
    assert sorted(list(train.ids) + list(valid.ids)) == sorted(ids)
    assert train[0]["feats"].shape == (8, 80)
