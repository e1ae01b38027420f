"""Tests of the downstream-task preparation (aasp_sb.data.tasks)."""

import csv
import json
import logging
import os
from pathlib import Path

import pytest
import task_fixtures as fx

from aasp_sb.data.tasks import TASKS, Split, TaskInfo, get_task, prepare_task
from aasp_sb.data.tasks.base import Item, class_complete_holdout

CLIP_SECONDS = {
    "esc50": 5.0,
    "us8k": 4.0,
    "spcv2": 1.0,
    "vc1": 8.2,
    "cremad": 2.5,
    "gtzan": 30.0,
    "nsynth": 4.0,
    "as20k": 10.0,
    "voxforge": 5.8,  # EVAR evar/ds_tasks.py: 'voxforge': [1, 5.8, 'softmax', None]
    "surge": 4.0,  # EVAR evar/ds_tasks.py: 'surge': [1, 4.0, 'softmax', None]
}


# helpers --------------------------------------------------------------------
def read_rows(path):
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        assert reader.fieldnames == ["ID", "duration", "wav", "label"]
        return list(reader)


def read_split(split):
    return {
        p: read_rows(getattr(split, f"{p}_csv"))
        for p in ("train", "valid", "test")
    }


def read_classes(save):
    return (Path(save) / "classes.txt").read_text().splitlines()


def ids(rows):
    return {r["ID"] for r in rows}


def check_split(split, classes, multilabel=False):
    """Generic checks: columns, absolute existing wavs, durations, labels,
    disjoint parts; returns the parts."""
    parts = read_split(split)
    for rows in parts.values():
        for r in rows:
            assert os.path.isabs(r["wav"]) and os.path.isfile(r["wav"])
            assert float(r["duration"]) == pytest.approx(
                fx.CLIP_SECONDS, abs=1e-3
            )
            labels = r["label"].split(";")
            assert labels and set(labels) <= set(classes), r
            if not multilabel:
                assert len(labels) == 1
    tr, va, te = (ids(parts[p]) for p in ("train", "valid", "test"))
    assert not (tr & va) and not (tr & te) and not (va & te)
    assert tr and va and te
    return parts


def _stamp(path):
    st = os.stat(path)  # files are replaced atomically: a rewrite is a new inode
    return st.st_ino, st.st_mtime_ns


def labels_of(rows):
    return {lab for r in rows for lab in r["label"].split(";")}


# registry -----------------------------------------------------------------
def test_registry_and_infos():
    assert set(TASKS) == set(CLIP_SECONDS)
    for name, module in TASKS.items():
        assert get_task(name) is module
        info = module.info
        assert isinstance(info, TaskInfo) and info.name == name
        assert info.clip_seconds == CLIP_SECONDS[name]
        assert info.metric == ("mAP" if name == "as20k" else "accuracy")
        assert info.multilabel == (name == "as20k")
        assert callable(module.prepare)
        assert getattr(module, f"prepare_{name}") is module.prepare
    assert get_task("ESC-50") is TASKS["esc50"]
    assert get_task("UrbanSound8K") is TASKS["us8k"]
    assert [
        get_task(n).info.num_classes
        for n in (
            "esc50",
            "us8k",
            "spcv2",
            "nsynth",
            "as20k",
            "vc1",
            "cremad",
            "gtzan",
        )
    ] == [50, 10, 35, 11, 527, 1251, 6, 10]
    assert TASKS["esc50"].info.folds == [f"fold{i}" for i in range(1, 6)]
    assert len(TASKS["us8k"].info.folds) == 10


def test_unknown_task_lists_valid_names():
    with pytest.raises(KeyError) as err:
        get_task("esc-51")
    msg = str(err.value)
    assert "esc-51" in msg
    for name in TASKS:
        assert name in msg


def test_class_complete_holdout_single_and_multi():
    xs = [Item(f"{i:03d}", "", ("abc"[i % 3],)) for i in range(60)]
    rest, held = class_complete_holdout(xs, 0.1, seed=3)
    assert len(held) == 6 and {x.label for x in held} == {"a", "b", "c"}
    assert ids_of(rest) | ids_of(held) == ids_of(xs) and not ids_of(
        rest
    ) & ids_of(held)
    # deterministic and independent of input order
    rest2, held2 = class_complete_holdout(list(reversed(xs)), 0.1, seed=3)
    assert ids_of(held2) == ids_of(held)
    # a singleton class stays in train
    rest, held = class_complete_holdout(xs + [Item("zzz", "", ("z",))], 0.1)
    assert "zzz" in ids_of(rest)
    # multi-label: every class with >= 2 clips is covered, rest keeps all
    ml = [
        Item(
            f"{i:03d}",
            "",
            tuple("abcd"[j] for j in range(4) if (i >> j) & 1) or ("a",),
        )
        for i in range(40)
    ]
    rest, held = class_complete_holdout(ml, 0.1)
    assert len(held) == 4
    covered = {lab for x in held for lab in x.labels}
    assert (
        covered
        == {"a", "b", "c", "d"}
        == {lab for x in rest for lab in x.labels}
    )


def ids_of(items):
    return {x.id for x in items}


# ESC-50 -------------------------------------------------------------------
def test_esc50_folds(tmp_path):
    meta = fx.make_esc50(tmp_path / "ESC-50")
    save = tmp_path / "out"
    info, splits = get_task("esc50").prepare(tmp_path / "ESC-50", save, seed=0)
    assert info.num_classes == 3 and info.folds == [
        f"fold{k}" for k in range(1, 6)
    ]
    assert [s.name for s in splits] == info.folds
    classes = read_classes(save)
    assert classes == [
        "dog",
        "rooster",
        "pig",
    ]  # target order, not alphabetical
    everything = set(meta["files"])
    for k, split in enumerate(splits, 1):
        parts = check_split(split, classes)
        assert ids(parts["test"]) == {
            i for i, (f, _) in meta["files"].items() if f == k
        }
        assert (
            ids(parts["train"]) | ids(parts["valid"]) | ids(parts["test"])
            == everything
        )
        assert labels_of(parts["valid"]) == set(classes)  # class-complete
        assert len(parts["valid"]) == 3  # 10 % of 24, one per class
        for rows in parts.values():
            for r in rows:
                assert r["label"] == meta["files"][r["ID"]][1]
                assert Path(r["wav"]).stem == r["ID"]


def test_esc50_idempotent_and_deterministic(tmp_path):
    fx.make_esc50(tmp_path / "d")
    out = prepare_task("esc50", tmp_path / "d", tmp_path / "a", seed=1)
    stamp = {
        p: _stamp(p)
        for s in out[1]
        for p in (s.train_csv, s.test_csv)
    }
    again = prepare_task("esc50", tmp_path / "d", tmp_path / "a", seed=1)
    assert again == out
    assert all(_stamp(p) == t for p, t in stamp.items())
    other = prepare_task("esc50", tmp_path / "d", tmp_path / "b", seed=1)
    for s, t in zip(out[1], other[1]):
        assert Path(s.valid_csv).read_text() == Path(t.valid_csv).read_text()
    # another seed changes the options and rewrites
    prepare_task("esc50", tmp_path / "d", tmp_path / "a", seed=2)
    record = json.loads((tmp_path / "a" / "prepare.json").read_text())
    assert record["options"]["seed"] == 2
    assert any(_stamp(p) != t for p, t in stamp.items())
    # a removed output invalidates the cache
    os.remove(out[1][0].test_csv)
    prepare_task("esc50", tmp_path / "d", tmp_path / "a", seed=2)
    assert os.path.isfile(out[1][0].test_csv)


def test_esc50_missing_and_unreadable(tmp_path, caplog):
    meta = fx.make_esc50(tmp_path / "d")
    audio = tmp_path / "d" / "audio"
    gone, bad = sorted(meta["files"])[:2]
    (audio / f"{gone}.wav").unlink()
    fx.write_corrupt(audio / f"{bad}.wav")
    with caplog.at_level(logging.WARNING):
        _, splits = prepare_task("esc50", tmp_path / "d", tmp_path / "o")
    warnings = [r for r in caplog.records if "skipping" in r.getMessage()]
    assert len(warnings) == 1  # listed once
    assert gone in warnings[0].getMessage() and bad in warnings[0].getMessage()
    skipped = (tmp_path / "o" / "skipped.txt").read_text()
    assert f"missing\t{audio / gone}.wav" in skipped and "unreadable" in skipped
    for split in splits:
        all_ids = set().union(*(ids(r) for r in read_split(split).values()))
        assert gone not in all_ids and bad not in all_ids
        assert len(all_ids) == len(meta["files"]) - 2


def test_esc50_wrong_layout(tmp_path):
    fx.make_esc50(tmp_path / "d", folds=1, clips=1)
    (tmp_path / "d" / "meta" / "esc50.csv").unlink()
    with pytest.raises(
        FileNotFoundError, match=r"ESC-50: meta/esc50.csv not found under .*d"
    ):
        prepare_task("esc50", tmp_path / "d", tmp_path / "o")
    fx.write_text(tmp_path / "d" / "meta" / "esc50.csv", "name,fold\nx.wav,1\n")
    with pytest.raises(FileNotFoundError, match="lacks column.*target"):
        prepare_task("esc50", tmp_path / "d", tmp_path / "o")


def test_nothing_usable_raises(tmp_path):
    meta = fx.make_esc50(tmp_path / "d", folds=2, clips=1)
    for stem in meta["files"]:
        (tmp_path / "d" / "audio" / f"{stem}.wav").unlink()
    with pytest.raises(RuntimeError, match="no usable audio"):
        prepare_task("esc50", tmp_path / "d", tmp_path / "o")


# UrbanSound8K -------------------------------------------------------------
def test_us8k_folds(tmp_path):
    meta = fx.make_us8k(tmp_path / "UrbanSound8K")
    info, splits = prepare_task(
        "UrbanSound8K", tmp_path / "UrbanSound8K", tmp_path / "o"
    )
    assert len(splits) == 10 and info.folds == [
        f"fold{k}" for k in range(1, 11)
    ]
    classes = read_classes(tmp_path / "o")
    assert classes == meta["classes"]
    for k, split in enumerate(splits, 1):
        parts = check_split(split, classes)
        assert ids(parts["test"]) == {
            i for i, (f, _) in meta["files"].items() if f == k
        }
        assert set().union(*(ids(p) for p in parts.values())) == set(
            meta["files"]
        )
        assert labels_of(parts["valid"]) == set(classes)
        for r in parts["test"]:
            assert f"{os.sep}fold{k}{os.sep}" in r["wav"]
            assert r["label"] == meta["files"][r["ID"]][1]


def test_us8k_wrong_layout(tmp_path):
    (tmp_path / "audio").mkdir()
    with pytest.raises(
        FileNotFoundError,
        match="UrbanSound8K: metadata/UrbanSound8K.csv not found",
    ):
        prepare_task("us8k", tmp_path, tmp_path / "o")


# Speech Commands V2 -------------------------------------------------------
def test_spcv2_official_lists(tmp_path, caplog):
    meta = fx.make_spcv2(tmp_path / "sc")
    # a listed clip that is missing on disk
    (tmp_path / "sc" / meta["test"][0]).unlink()
    info, splits = prepare_task("spcv2", tmp_path / "sc", tmp_path / "o")
    assert info.num_classes == 3 and info.folds is None
    assert [s.name for s in splits] == ["official"]
    classes = read_classes(tmp_path / "o")
    assert classes == sorted(meta["classes"])  # _background_noise_ excluded
    parts = check_split(splits[0], classes)

    def to_ids(rels):
        return {f"{r.split('/')[0]}_{Path(r).stem}" for r in rels}

    assert ids(parts["valid"]) == to_ids(meta["valid"])
    assert ids(parts["test"]) == to_ids(meta["test"][1:])
    assert ids(parts["train"]) == to_ids(meta["train"])
    for rows in parts.values():
        for r in rows:
            assert (
                r["label"]
                == Path(r["wav"]).parent.name
                == r["ID"].split("_")[0]
            )
    assert (
        meta["test"][0].split("/")[1]
        in (tmp_path / "o" / "skipped.txt").read_text()
    )


def test_spcv2_wrong_layout(tmp_path):
    fx.make_spcv2(tmp_path / "sc", per_word=2)
    (tmp_path / "sc" / "testing_list.txt").unlink()
    with pytest.raises(
        FileNotFoundError,
        match="Speech Commands V2: testing_list.txt not found",
    ):
        prepare_task("spcv2", tmp_path / "sc", tmp_path / "o")


# NSynth -------------------------------------------------------------------
def test_nsynth_official_subsets(tmp_path):
    meta = fx.make_nsynth(tmp_path / "nsynth")
    info, splits = prepare_task("nsynth", tmp_path / "nsynth", tmp_path / "o")
    classes = read_classes(tmp_path / "o")
    assert classes == ["bass", "guitar", "vocal"] and info.num_classes == 3
    parts = check_split(splits[0], classes)
    for part, rows in parts.items():
        assert ids(rows) == {
            n for n, (s, _) in meta["notes"].items() if s == part
        }
        for r in rows:
            assert r["label"] == meta["notes"][r["ID"]][1]
            assert f"nsynth-{part}" in r["wav"]


def test_nsynth_wrong_layout(tmp_path):
    fx.make_nsynth(tmp_path / "n", per_family=1)
    (tmp_path / "n" / "nsynth-valid" / "examples.json").unlink()
    with pytest.raises(
        FileNotFoundError, match="NSynth: nsynth-valid/examples.json not found"
    ):
        prepare_task("nsynth", tmp_path / "n", tmp_path / "o")


# AudioSet-20K ---------------------------------------------------------------
def test_as20k_multilabel(tmp_path, caplog):
    meta = fx.make_as20k(tmp_path / "as")
    with caplog.at_level(logging.WARNING):
        info, splits = prepare_task(
            "as20k", tmp_path / "as", tmp_path / "o", seed=0
        )
    assert info.multilabel and info.metric == "mAP" and info.num_classes == 4
    classes = read_classes(tmp_path / "o")
    assert classes == meta["classes"]  # official index order
    display = (tmp_path / "o" / "display_names.txt").read_text().splitlines()
    assert display[1] == "Male speech, man speaking"
    parts = check_split(splits[0], classes, multilabel=True)
    train_ids = {y for y, (p, _) in meta["clips"].items() if p == "train"}
    assert ids(parts["test"]) == {
        y for y, (p, _) in meta["clips"].items() if p == "test"
    }
    assert ids(parts["train"]) | ids(parts["valid"]) == train_ids
    # 10 % of 20 clips, raised where needed to cover all four classes
    assert 2 <= len(parts["valid"]) <= 4
    assert (
        labels_of(parts["valid"]) == labels_of(parts["train"]) == set(classes)
    )
    multi = 0
    for rows in parts.values():
        for r in rows:
            labels = r["label"].split(";")
            assert set(labels) == set(meta["clips"][r["ID"]][1])
            assert labels == sorted(labels, key=classes.index)
            multi += len(labels) > 1
    assert multi > 0
    # every file-name convention (Y{id}.wav, {id}.wav, {id}_{start}.wav, .flac) matched
    suffixes = {Path(r["wav"]).suffix for rows in parts.values() for r in rows}
    assert suffixes == {".wav", ".flac"}
    assert any(
        Path(r["wav"]).stem.startswith("Y")
        for r in parts["train"] + parts["valid"] + parts["test"]
    )
    # missing clips counted and listed once
    warnings = [
        r.getMessage() for r in caplog.records if "skipping" in r.getMessage()
    ]
    assert len(warnings) == 1 and "2 missing" in warnings[0]
    skipped = (tmp_path / "o" / "skipped.txt").read_text()
    assert all(y in skipped for y in meta["missing"])


def test_as20k_valid_class_complete(tmp_path):
    fx.make_as20k(tmp_path / "as", n_train=40, missing=())
    _, splits = prepare_task("as20k", tmp_path / "as", tmp_path / "o", seed=5)
    parts = read_split(splits[0])
    assert labels_of(parts["valid"]) == set(
        fx.AS_CLASSES[i][0] for i in range(4)
    )
    assert len(parts["valid"]) == 4


def test_as20k_wrong_layout(tmp_path):
    fx.make_as20k(tmp_path / "as", n_train=4, n_eval=2)
    (tmp_path / "as" / "class_labels_indices.csv").unlink()
    with pytest.raises(
        FileNotFoundError,
        match="AudioSet-20K: class_labels_indices.csv not found",
    ):
        prepare_task("as20k", tmp_path / "as", tmp_path / "o")


def test_as20k_segment_parsing(tmp_path):
    from aasp_sb.data.tasks.as20k import read_segments, ytid_keys

    p = fx.write_text(
        tmp_path / "s.csv",
        "# created\n# num_ytids=2\n# YTID, start_seconds, end_seconds, positive_labels\n"
        '--PJHxphWEs, 30.000, 40.000, "/m/09x0r,/t/dd00088"\n'
        "abcdefghijk, 0.000, 10.000, /m/04rlf\n",
    )
    assert read_segments(p) == [
        ("--PJHxphWEs", 30.0, ("/m/09x0r", "/t/dd00088")),
        ("abcdefghijk", 0.0, ("/m/04rlf",)),
    ]
    assert ytid_keys("Y--PJHxphWEs") == [("--PJHxphWEs", 0)]
    assert ytid_keys("--PJHxphWEs_30000") == [("--PJHxphWEs", 1)]
    assert ytid_keys("short") == []
    bad = fx.write_text(tmp_path / "bad.csv", "# c\nabcdefghijk, zero, 10.0, /m/04rlf\n")
    from aasp_sb.data.tasks.base import LayoutError

    with pytest.raises(LayoutError, match=r"AudioSet-20K: .*bad.csv, line 2"):
        read_segments(bad)


# VoxCeleb1 ----------------------------------------------------------------
@pytest.mark.parametrize("unmerged", [False, True])
def test_vc1_official_split(tmp_path, unmerged):
    meta = fx.make_vc1(tmp_path / "vc1", unmerged=unmerged)
    info, splits = prepare_task("vc1", tmp_path / "vc1", tmp_path / "o")
    classes = read_classes(tmp_path / "o")
    assert classes == meta["classes"] and info.num_classes == 3
    parts = check_split(splits[0], classes)
    for part, rows in parts.items():
        assert ids(rows) == {
            i for i, (p, _) in meta["expected"].items() if p == part
        }
        for r in rows:
            assert r["label"] == meta["expected"][r["ID"]][1]


def test_vc1_wrong_layout(tmp_path):
    fx.make_vc1(tmp_path / "vc1", speakers=1)
    (tmp_path / "vc1" / "iden_split.txt").unlink()
    with pytest.raises(
        FileNotFoundError, match="VoxCeleb1: iden_split.txt not found"
    ):
        prepare_task("vc1", tmp_path / "vc1", tmp_path / "o")


# CREMA-D ------------------------------------------------------------------
def test_cremad_speaker_independent(tmp_path):
    """Default: EVAR's actors (evar/metadata/cremad.csv); the seed moves nothing."""
    from aasp_sb.data.tasks.cremad import evar_actor_split

    meta = fx.make_cremad(tmp_path / "CREMA-D")  # actors 1001-1010
    info, splits = prepare_task(
        "cremad", tmp_path / "CREMA-D", tmp_path / "o", seed=0
    )
    assert info.num_classes == 6 and splits[0].name == "evar_actors"
    classes = read_classes(tmp_path / "o")
    assert classes == meta["classes"]
    parts = check_split(splits[0], classes)
    actors = {
        p: {meta["files"][r["ID"]][0] for r in rows}
        for p, rows in parts.items()
    }
    evar = evar_actor_split()
    for p, found in actors.items():
        assert found == {a for a in found if evar[a] == p}
        assert found == {a for a, q in evar.items() if q == p and a <= "1010"}
    assert [len(actors[p]) for p in ("train", "valid", "test")] == [7, 1, 2]
    assert set().union(*(ids(r) for r in parts.values())) == set(meta["files"])
    for rows in parts.values():
        for r in rows:
            assert r["label"] == meta["files"][r["ID"]][1]
    assert labels_of(parts["valid"]) == set(classes)
    # another seed: the same split (and the same cached record)
    for s in (1, 2):
        other = prepare_task(
            "cremad", tmp_path / "CREMA-D", tmp_path / f"s{s}", seed=s
        )[1][0]
        assert other.name == "evar_actors"
        assert (
            Path(other.test_csv).read_text()
            == Path(splits[0].test_csv).read_text()
        )


def test_cremad_seeded_split_moves_with_its_seed(tmp_path):
    meta = fx.make_cremad(tmp_path / "CREMA-D")
    runs = [
        prepare_task(
            "cremad", tmp_path / "CREMA-D", tmp_path / f"s{s}", seed=s,
            split="seeded",
        )[1][0]
        for s in (0, 1, 2)
    ]
    assert [r.name for r in runs] == [f"seeded_actors_seed{s}" for s in (0, 1, 2)]
    tests = [Path(r.test_csv).read_text() for r in runs]
    assert len(set(tests)) > 1
    parts = read_split(runs[0])
    actors = {
        p: {meta["files"][r["ID"]][0] for r in rows} for p, rows in parts.items()
    }
    assert [len(actors[p]) for p in ("train", "valid", "test")] == [7, 1, 2]
    with pytest.raises(ValueError, match="split must be one of"):
        prepare_task("cremad", tmp_path / "CREMA-D", tmp_path / "x", split="nope")


def test_cremad_split_csv_uses_exactly_evars_list(tmp_path, caplog):
    meta = fx.make_cremad(tmp_path / "CREMA-D")
    stems = sorted(meta["files"])
    listed = stems[:-3]  # three clips on disk are not in the list
    csv_path = tmp_path / "cremad.csv"
    with open(csv_path, "w", encoding="utf-8") as f:
        f.write("file_name,label,speaker_id,split\n")
        for i, stem in enumerate(listed):
            actor, emo = meta["files"][stem]
            part = ("train", "valid", "test")[i % 3]  # not by actor: the list rules
            f.write(f"{stem}.wav,{emo},{actor},{part}\n")
    with caplog.at_level(logging.WARNING):
        _, splits = prepare_task(
            "cremad", tmp_path / "CREMA-D", tmp_path / "o", split_csv=csv_path
        )
    assert splits[0].name == "evar_csv"
    assert "3 clip(s) on disk are not in" in caplog.text
    parts = read_split(splits[0])
    for p, rows in parts.items():
        want = {s for i, s in enumerate(listed) if ("train", "valid", "test")[i % 3] == p}
        assert ids(rows) == want
    with pytest.raises(FileNotFoundError, match="split_csv"):
        prepare_task(
            "cremad", tmp_path / "CREMA-D", tmp_path / "o2",
            split_csv=tmp_path / "missing.csv",
        )


def test_cremad_wrong_layout(tmp_path):
    with pytest.raises(FileNotFoundError, match="CREMA-D: AudioWAV/ not found"):
        prepare_task("cremad", tmp_path, tmp_path / "o")


# GTZAN --------------------------------------------------------------------
@pytest.mark.parametrize("au_lines", [False, True])
def test_gtzan_filtered_lists(tmp_path, au_lines):
    meta = fx.make_gtzan(tmp_path / "gtzan", au_lines=au_lines)
    info, splits = prepare_task("gtzan", tmp_path / "gtzan", tmp_path / "o")
    assert splits[0].name == "filtered" and info.num_classes == 3
    classes = read_classes(tmp_path / "o")
    assert classes == meta["classes"]
    parts = check_split(splits[0], classes)
    for part, rows in parts.items():
        assert ids(rows) == {Path(r).stem for r in meta["parts"][part]}
        for r in rows:
            assert r["label"] == r["ID"].split(".")[0]
    assert "blues.00005" not in set().union(*(ids(r) for r in parts.values()))


def test_gtzan_stratified_fallback_skips_corrupt(tmp_path, caplog):
    fx.make_gtzan(tmp_path / "gtzan", lists=False, per_genre=10)
    with caplog.at_level(logging.WARNING):
        info, splits = prepare_task(
            "gtzan", tmp_path / "gtzan", tmp_path / "o", seed=0
        )
    assert splits[0].name == "stratified"
    classes = read_classes(tmp_path / "o")
    parts = check_split(splits[0], classes)
    all_ids = set().union(*(ids(r) for r in parts.values()))
    assert "jazz.00054" not in all_ids and len(all_ids) == 30
    assert "jazz.00054.wav" in (tmp_path / "o" / "skipped.txt").read_text()
    assert any("jazz.00054.wav" in r.getMessage() for r in caplog.records)
    assert [len(parts[p]) for p in ("train", "valid", "test")] == [21, 3, 6]
    for p in ("valid", "test"):
        assert labels_of(parts[p]) == set(classes)


def test_gtzan_partial_lists_and_missing_genres(tmp_path):
    fx.make_gtzan(tmp_path / "g", per_genre=1, corrupt=False)
    (tmp_path / "g" / "valid_filtered.txt").unlink()
    with pytest.raises(
        FileNotFoundError, match="GTZAN: valid_filtered.txt not found"
    ):
        prepare_task("gtzan", tmp_path / "g", tmp_path / "o")
    with pytest.raises(FileNotFoundError, match="GTZAN: genres/ not found"):
        prepare_task("gtzan", tmp_path / "nothing", tmp_path / "o")


def test_split_dataclass_roundtrip(tmp_path):
    fx.make_cremad(tmp_path / "c", actors=10)
    info, splits = prepare_task("cremad", tmp_path / "c", tmp_path / "o")
    assert isinstance(splits[0], Split)
    assert prepare_task("cremad", tmp_path / "c", tmp_path / "o") == (
        info,
        splits,
    )


# VoxForge and Surge (EVAR's nine) ------------------------------------------
def test_voxforge_evar_csv_is_used_exactly(tmp_path):
    """EVAR evar/metadata/voxforge.csv form: file_name,label,split."""
    meta = fx.make_voxforge(tmp_path / "vf", evar_csv=True)
    info, splits = prepare_task(
        "voxforge", tmp_path / "vf", tmp_path / "o", split_csv=meta["csv"]
    )
    assert splits[0].name == "evar_csv" and info.num_classes == 3
    classes = read_classes(tmp_path / "o")
    assert classes == sorted(meta["classes"])
    parts = check_split(splits[0], classes)
    for p, rows in parts.items():
        assert ids(rows) == {k for k, v in meta["files"].items() if v[2] == p}
        for r in rows:
            assert r["label"] == meta["files"][r["ID"]][0]


def test_voxforge_seeded_sessions_warn_and_never_straddle(tmp_path, caplog):
    meta = fx.make_voxforge(tmp_path / "vf")
    with caplog.at_level(logging.WARNING):
        _, splits = prepare_task("voxforge", tmp_path / "vf", tmp_path / "o", seed=3)
    assert splits[0].name == "seeded_sessions_seed3"
    assert "NOT EVAR's" in caplog.text
    parts = check_split(splits[0], read_classes(tmp_path / "o"))
    sessions = {p: {meta["files"][r["ID"]][1] for r in rows} for p, rows in parts.items()}
    assert not (sessions["train"] & sessions["valid"])
    assert not (sessions["train"] & sessions["test"])
    assert [len(sessions[p]) for p in ("train", "valid", "test")] == [10, 2, 3]
    with pytest.raises(FileNotFoundError, match="VoxForge: no <language>"):
        prepare_task("voxforge", tmp_path / "o", tmp_path / "o2")


def test_surge_tone_splits_are_evars(tmp_path):
    """EVAR make_metadata.py surge(): label = file stem, part = the tone's."""
    meta = fx.make_surge(tmp_path / "surge")
    info, splits = prepare_task(
        "surge", tmp_path / "surge", tmp_path / "o", split_csv=meta["csv"]
    )
    assert splits[0].name == "evar_tones" and info.num_classes == 3
    classes = read_classes(tmp_path / "o")
    assert classes == meta["classes"]  # natural pitch order
    parts = check_split(splits[0], classes)
    tones = {p: {meta["files"][r["ID"]][1] for r in rows} for p, rows in parts.items()}
    assert tones["test"] == {"surge-patches-Test-Tone-0-velocity64"}
    assert tones["valid"] == {"surge-patches-Test-Tone-1-velocity64"}
    assert len(tones["train"]) == 8
    for rows in parts.values():
        for r in rows:
            assert r["label"] == meta["files"][r["ID"]][0]


def test_surge_without_evars_list_warns(tmp_path, caplog):
    fx.make_surge(tmp_path / "surge")
    with caplog.at_level(logging.WARNING):
        _, splits = prepare_task("surge", tmp_path / "surge", tmp_path / "o", seed=1)
    assert splits[0].name == "seeded_tones_seed1" and "NOT EVAR's" in caplog.text
    parts = read_split(splits[0])
    tone = {p: {r["ID"].split("/")[0] for r in rows} for p, rows in parts.items()}
    assert [len(tone[p]) for p in ("train", "valid", "test")] == [8, 1, 1]
