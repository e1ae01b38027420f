"""Manifests from audio folders and AudioSet trees."""

import logging
import os

import numpy as np
import pytest
import soundfile as sf

from aasp_sb.data import audioset as audioset_mod
from aasp_sb.data import folder as folder_mod
from aasp_sb.data.audioset import (
    parse_segments_csv,
    parse_ytid,
    prepare_audioset,
    read_class_labels,
)
from aasp_sb.data.demo import make_unlabeled_folder
from aasp_sb.data.folder import prepare_audio_folder, read_csv


def _wav(path, seconds=0.2, sr=16000):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    x = 0.1 * np.random.default_rng(len(path)).standard_normal(
        int(seconds * sr)
    )
    sf.write(path, x.astype(np.float32), sr)


def _corrupt(path):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(b"RIFF not really a wave file" * 10)


@pytest.fixture
def tree(tmp_path):
    root = tmp_path / "audio"
    _wav(str(root / "b.wav"), 0.5)
    _wav(str(root / "a" / "x.flac"), 0.3, 8000)
    _wav(str(root / "a" / "deep" / "y.ogg"), 0.4, 22050)
    _wav(str(root / "a" / "x.wav"), 0.25)  # same stem as x.flac
    _wav(str(root / "short.wav"), 0.05)
    _corrupt(str(root / "a" / "broken.wav"))
    (root / "notes.txt").write_text("not audio")
    _wav(str(root / ".hidden.wav"))
    return root


def test_folder_manifest_counts_and_skips(tree, tmp_path, caplog):
    save = tmp_path / "save"
    with caplog.at_level(logging.INFO):
        out = prepare_audio_folder(str(tree), str(save), min_seconds=0.1)
    rows = read_csv(out["train"])
    assert out["valid"] is None
    assert [r["ID"] for r in rows] == ["a/deep/y", "a/x.flac", "a/x.wav", "b"]
    assert list(rows[0]) == ["ID", "duration", "wav"]
    for r in rows:
        assert os.path.isabs(r["wav"]) and os.path.exists(r["wav"])
        info = sf.info(r["wav"])
        assert float(r["duration"]) == pytest.approx(
            info.frames / info.samplerate, abs=1e-4
        )
    broken = str(tree / "a" / "broken.wav")
    warnings = [
        r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING
    ]
    assert sum(broken in m for m in warnings) == 1
    assert "1 unreadable" in "\n".join(warnings)
    assert broken in (save / "train_skipped.txt").read_text()
    assert all("short.wav" not in r["wav"] for r in rows)


def test_folder_split_and_determinism(tmp_path):
    root = tmp_path / "audio"
    for i in range(8):
        _wav(str(root / f"c{i}.wav"), 0.1)
    out = prepare_audio_folder(
        str(root), str(tmp_path / "s1"), valid_fraction=0.25, seed=1
    )
    train, valid = read_csv(out["train"]), read_csv(out["valid"])
    assert len(train) == 6 and len(valid) == 2
    ids = {r["ID"] for r in train} | {r["ID"] for r in valid}
    assert ids == {f"c{i}" for i in range(8)}
    again = prepare_audio_folder(
        str(root), str(tmp_path / "s2"), valid_fraction=0.25, seed=1
    )
    assert read_csv(again["valid"]) == valid
    with pytest.raises(ValueError, match="no training"):
        prepare_audio_folder(
            str(root), str(tmp_path / "s3"), valid_fraction=0.99
        )


def test_folder_idempotent(tree, tmp_path, monkeypatch):
    save = str(tmp_path / "save")
    out = prepare_audio_folder(str(tree), save)
    before = read_csv(out["train"])

    def fail(*args, **kwargs):
        raise AssertionError("re-probed although the manifest is up to date")

    monkeypatch.setattr(folder_mod, "probe_files", fail)
    assert prepare_audio_folder(str(tree), save) == out
    monkeypatch.undo()
    # Changed options re-run the preparation.
    out2 = prepare_audio_folder(str(tree), save, min_seconds=0.2)
    assert len(read_csv(out2["train"])) < len(before)


def test_folder_errors(tmp_path):
    only_bad = tmp_path / "bad"
    _corrupt(str(only_bad / "x.wav"))
    with pytest.raises(RuntimeError, match=str(only_bad)):
        prepare_audio_folder(str(only_bad), str(tmp_path / "s"))
    with pytest.raises(FileNotFoundError, match="nowhere"):
        prepare_audio_folder(str(tmp_path / "nowhere"), str(tmp_path / "s"))


def test_mixed_unlabeled_folder(tmp_path):
    paths = make_unlabeled_folder(str(tmp_path / "u"), n=10, seconds=(0.1, 0.3))
    out = prepare_audio_folder(
        str(tmp_path / "u"), str(tmp_path / "s"), num_workers=2
    )
    rows = read_csv(out["train"])
    assert sorted(r["wav"] for r in rows) == sorted(paths)


# --------------------------------------------------------------------------
# AudioSet
# --------------------------------------------------------------------------

SEGMENTS = """\
# Segments csv created Sun Mar  5 10:54:31 2017
# num_ytids=5, num_segs=5, num_unique_labels=3, num_positive_labels=7
# YTID, start_seconds, end_seconds, positive_labels
--0bntG9i7E, 30.000, 40.000, "/m/09x0r,/m/04rlf"
-0DdlOuIFUI, 50.000, 60.000, "/m/0jbk"
-1_bF9KanOQ, 0.000, 10.000, "/m/09x0r"
zzzMissing1, 10.000, 20.000, "/m/04rlf"
zzzMissing2, 0.000, 10.000, "/m/0jbk,/m/09x0r"
"""


@pytest.fixture
def audioset_tree(tmp_path):
    root = tmp_path / "audioset"
    _wav(str(root / "balanced" / "Y--0bntG9i7E.wav"), 0.3)
    _wav(str(root / "balanced" / "-0DdlOuIFUI_50.000.wav"), 0.2, 44100)
    _wav(str(root / "unbal" / "part01" / "-1_bF9KanOQ.flac"), 0.25)
    _wav(str(root / "unbal" / "YnotInTheCsv.wav"), 0.2)  # 11-char id after Y
    _wav(str(root / "unbal" / "readme_not_an_id.wav"), 0.2)
    seg = tmp_path / "balanced_train_segments.csv"
    seg.write_text(SEGMENTS)
    return root, str(seg)


def test_parse_ytid_and_segments(audioset_tree):
    assert parse_ytid("Y--0bntG9i7E.wav") == "--0bntG9i7E"
    assert parse_ytid("--0bntG9i7E_30.000.wav") == "--0bntG9i7E"
    assert parse_ytid("--0bntG9i7E_30.000_40.000.flac") == "--0bntG9i7E"
    assert parse_ytid("--0bntG9i7E.flac") == "--0bntG9i7E"
    assert parse_ytid("Yabc.wav") is None
    segs = parse_segments_csv(audioset_tree[1])
    assert len(segs) == 5
    assert segs[0] == {
        "ytid": "--0bntG9i7E",
        "start": 30.0,
        "end": 40.0,
        "labels": ["/m/09x0r", "/m/04rlf"],
    }


def test_audioset_without_csv_lists_all_clips(audioset_tree, tmp_path):
    root, _ = audioset_tree
    out = prepare_audioset(str(root), str(tmp_path / "s"))
    rows = read_csv(out["train"])
    assert [r["ID"] for r in rows] == sorted(
        ["--0bntG9i7E", "-0DdlOuIFUI", "-1_bF9KanOQ", "notInTheCsv"]
    )
    assert "label" not in rows[0]


def test_audioset_selection_labels_and_missing(audioset_tree, tmp_path, caplog):
    root, seg = audioset_tree
    save = tmp_path / "s"
    with caplog.at_level(logging.WARNING):
        out = prepare_audioset(
            str(root), str(save), segments_csv=seg, csv_name="bal.csv"
        )
    rows = {r["ID"]: r for r in read_csv(out["train"])}
    assert set(rows) == {"--0bntG9i7E", "-0DdlOuIFUI", "-1_bF9KanOQ"}
    assert rows["--0bntG9i7E"]["label"] == "/m/09x0r;/m/04rlf"
    assert rows["-0DdlOuIFUI"]["label"] == "/m/0jbk"
    assert float(rows["-0DdlOuIFUI"]["duration"]) == pytest.approx(
        0.2, abs=1e-3
    )
    assert out["num_missing"] == 2
    text = "\n".join(r.getMessage() for r in caplog.records)
    assert "2 clips" in text and text.count("zzzMissing1") == 1
    missing = (save / "bal_missing.txt").read_text().split("\n")
    assert [m.split("\t")[0] for m in missing if m] == [
        "zzzMissing1",
        "zzzMissing2",
    ]

    # Idempotent: the second call reads nothing.
    def fail(*args, **kwargs):
        raise AssertionError("re-listed")

    orig = audioset_mod._list_clip_files
    audioset_mod._list_clip_files = fail
    try:
        again = prepare_audioset(
            str(root), str(save), segments_csv=seg, csv_name="bal.csv"
        )
    finally:
        audioset_mod._list_clip_files = orig
    assert again == out


def test_audioset_class_check_and_nothing_usable(audioset_tree, tmp_path):
    root, seg = audioset_tree
    labels = tmp_path / "class_labels_indices.csv"
    labels.write_text(
        'index,mid,display_name\n0,/m/09x0r,"Speech"\n1,/m/04rlf,"Music"\n'
    )
    assert read_class_labels(str(labels)) == [
        ("/m/09x0r", "Speech"),
        ("/m/04rlf", "Music"),
    ]
    with pytest.raises(ValueError, match="/m/0jbk"):
        prepare_audioset(
            str(root),
            str(tmp_path / "s"),
            segments_csv=seg,
            class_labels_csv=str(labels),
        )
    other = tmp_path / "eval_segments.csv"
    other.write_text('# a\n# b\n# c\nzzzMissing1, 0.0, 10.0, "/m/09x0r"\n')
    with pytest.raises(RuntimeError, match="no usable AudioSet clips"):
        prepare_audioset(
            str(root), str(tmp_path / "s2"), segments_csv=str(other)
        )


def test_audioset_unreadable_clip_skipped(audioset_tree, tmp_path):
    root, seg = audioset_tree
    _corrupt(str(root / "balanced" / "Y--0bntG9i7E.wav"))
    out = prepare_audioset(str(root), str(tmp_path / "s"), segments_csv=[seg])
    ids = [r["ID"] for r in read_csv(out["train"])]
    assert "--0bntG9i7E" not in ids and len(ids) == 2
    assert (
        "Y--0bntG9i7E.wav" in (tmp_path / "s" / "train_skipped.txt").read_text()
    )
