"""SpeechBrain pipelines: exact crops, labels, substitution of bad clips."""

import logging

import numpy as np
import pytest
import soundfile as sf
import torch
from speechbrain.dataio.batch import PaddedBatch

from aasp_sb.data.audio import AudioLoadError, SkipCounter
from aasp_sb.data.folder import read_csv, write_csv
from aasp_sb.data.pipeline import (
    LabelEncoder,
    labelled_dataset,
    pretrain_dataset,
    validate_manifest,
)

FIELDS = ["ID", "duration", "wav", "label"]


def _manifest(tmp_path, spec, name="m.csv"):
    """spec: list of (id, seconds, sample_rate or 'bad'/'nan', label)."""
    rows = []
    for i, (uid, sec, sr, label) in enumerate(spec):
        path = str(tmp_path / f"{uid}.wav")
        if sr == "bad":
            with open(path, "wb") as f:
                f.write(b"not audio" * 50)
        elif sr == "nan":
            sf.write(
                path,
                np.full(1600, np.nan, dtype=np.float32),
                16000,
                subtype="FLOAT",
            )
        else:
            n = int(sec * sr)
            # Constant level per clip (i + 1) / 10 identifies its source.
            sf.write(
                path,
                np.full(n, (i + 1) / 10, dtype=np.float32),
                sr,
                subtype="FLOAT",
            )
        rows.append({"ID": uid, "duration": sec, "wav": path, "label": label})
    csv = str(tmp_path / name)
    write_csv(csv, rows, FIELDS)
    return csv


SPEC = [
    ("a", 0.5, 16000, "cat"),
    ("b", 1.0, "bad", "dog"),
    ("c", 2.0, 8000, "bird"),
    ("d", 0.2, 16000, "dog"),
]


def test_pretrain_crops_exact_and_substitutes(tmp_path, caplog):
    csv = _manifest(tmp_path, SPEC)
    ds = pretrain_dataset(csv, crop_seconds=1.0)
    with caplog.at_level(logging.WARNING):
        items = [ds[i] for i in range(len(ds))] + [ds[1]]
    assert [it["id"] for it in items] == ["a", "b", "c", "d", "b"]
    for it in items:
        assert set(it) == {"id", "sig"} and it["sig"].shape == (16000,)
        assert it["sig"].dtype == torch.float32
    # "b" is corrupt: the next clip ("c", constant 0.3) stands in for it.
    # (resampled from 8 kHz: compare away from the window edges)
    assert torch.allclose(
        items[1]["sig"][500:-500], torch.full((15000,), 0.3), atol=1e-3
    )
    assert torch.allclose(
        items[0]["sig"], torch.full((16000,), 0.1)
    )  # tiled, no padding
    bad_path = read_csv(csv)[1]["wav"]
    assert sum(bad_path in r.getMessage() for r in caplog.records) == 1
    assert ds.skip_counter.num_files == 1 and ds.skip_counter.paths == [
        bad_path
    ]
    assert "clips skipped" in ds.skip_counter.summary()
    ds.set_output_keys(["id", "src_id", "valid", "rel_length"])
    assert ds[1] == {"id": "b", "src_id": "c", "valid": True, "rel_length": 1.0}

    batch = PaddedBatch(
        [
            ds_item
            for ds_item in (pretrain_dataset(csv, 1.0)[i] for i in range(4))
        ]
    )
    assert batch.sig.data.shape == (4, 16000) and torch.all(
        batch.sig.lengths == 1.0
    )


def test_consecutive_and_all_bad(tmp_path):
    spec = [
        ("a", 0.5, "bad", "x"),
        ("b", 0.5, "nan", "x"),
        ("c", 0.5, 16000, "y"),
    ]
    csv = _manifest(tmp_path, spec)
    ds = pretrain_dataset(csv, crop_seconds=0.25, pad="zero")
    ds.set_output_keys(["sig", "src_id", "valid"])
    assert ds[0]["src_id"] == "c" and ds[1]["src_id"] == "c" and ds[0]["valid"]
    assert ds.skip_counter.num_files == 2

    spec = [("a", 0.5, "bad", "x"), ("b", 0.5, "bad", "x")]
    csv = _manifest(tmp_path, spec, "allbad.csv")
    ds = pretrain_dataset(csv, crop_seconds=0.25)
    ds.set_output_keys(["sig", "valid"])
    item = ds[0]
    assert (
        item["sig"].shape == (4000,)
        and not item["valid"]
        and item["sig"].abs().sum() == 0
    )
    assert ds.skip_counter.num_files == 2
    counter_before = ds.skip_counter.count
    ds[0]  # known-bad clips are not re-read
    assert ds.skip_counter.count == counter_before


def test_max_tries_limits_substitution(tmp_path):
    spec = [
        ("a", 0.2, "bad", "x"),
        ("b", 0.2, "bad", "x"),
        ("c", 0.2, "bad", "x"),
        ("d", 0.2, 16000, "x"),
    ]
    csv = _manifest(tmp_path, spec)
    ds = pretrain_dataset(csv, crop_seconds=0.1, max_tries=1)
    ds.set_output_keys(["valid", "src_id"])
    assert ds[0] == {"valid": False, "src_id": "a"}


def test_on_error_zero_and_raise(tmp_path):
    csv = _manifest(tmp_path, SPEC)
    ds = labelled_dataset(csv, 0.5, on_error="zero")
    ds.set_output_keys(["sig", "label", "valid", "src_id"])
    item = ds[1]
    assert (
        not item["valid"]
        and item["src_id"] == "b"
        and item["sig"].abs().sum() == 0
    )
    assert (
        ds.classes[int(item["label"])] == "dog"
    )  # its own label, to be masked
    whole = labelled_dataset(csv, None, on_error="zero")
    assert whole[1]["sig"].shape == (
        16000,
    )  # zero clip of the manifest duration
    with pytest.raises(AudioLoadError, match="b.wav"):
        pretrain_dataset(csv, 0.5, on_error="raise")[1]


def test_labelled_single_label_follows_substitute(tmp_path):
    csv = _manifest(tmp_path, SPEC)
    classes = ["bird", "cat", "dog"]
    ds = labelled_dataset(csv, crop_seconds=0.5, classes=classes, mode="start")
    assert ds.classes == classes
    items = [ds[i] for i in range(4)]
    assert [it["label"].tolist() for it in items] == [
        [1],
        [0],
        [0],
        [2],
    ]  # b -> c ("bird")
    assert items[0]["sig"].shape == (8000,)
    zero_padded = items[3]["sig"]  # "d" is 0.2 s: zero padded to 0.5 s
    assert torch.allclose(zero_padded[:3200], torch.full((3200,), 0.4))
    assert zero_padded[3200:].abs().sum() == 0
    ds.set_output_keys(["rel_length"])
    assert ds[3]["rel_length"] == pytest.approx(0.4)
    batch = PaddedBatch(items)
    assert batch.label.data.shape == (4, 1) and batch.sig.data.shape == (
        4,
        8000,
    )
    # Classes from a classes.txt file; derived classes are sorted.
    txt = tmp_path / "classes.txt"
    txt.write_text("bird\ncat\ndog\n")
    assert labelled_dataset(csv, 0.5, classes=str(txt)).classes == classes
    assert labelled_dataset(csv, 0.5).classes == classes


def test_labelled_multilabel_and_errors(tmp_path):
    spec = [
        ("a", 0.3, 16000, "m1;m2"),
        ("b", 0.3, 16000, "m3"),
        ("c", 0.3, 16000, "m2"),
    ]
    csv = _manifest(tmp_path, spec)
    ds = labelled_dataset(
        csv, None, classes=["m1", "m2", "m3"], multilabel=True
    )
    assert ds[0]["label"].tolist() == [1.0, 1.0, 0.0]
    assert ds[1]["label"].tolist() == [0.0, 0.0, 1.0]
    assert ds[0]["sig"].shape == (4800,)
    with pytest.raises(ValueError, match="multilabel=True"):
        labelled_dataset(csv, 0.3)
    with pytest.raises(ValueError, match="'b'.*m3"):
        labelled_dataset(csv, 0.3, classes=["m1", "m2"], multilabel=True)
    assert LabelEncoder(["x", "y"])("y").dtype == torch.long


def test_pad_none_gives_padded_batch_lengths(tmp_path):
    csv = _manifest(tmp_path, [("a", 0.5, 16000, "x"), ("b", 0.25, 16000, "x")])
    ds = labelled_dataset(csv, crop_seconds=1.0, pad="none", mode="start")
    batch = PaddedBatch([ds[0], ds[1]])
    assert batch.sig.data.shape == (2, 8000)
    assert batch.sig.lengths.tolist() == [1.0, 0.5]


def test_random_crops_vary_and_windows_are_real(tmp_path):
    path = str(tmp_path / "ramp.wav")
    x = (np.arange(32000) / 32000).astype(np.float32)
    sf.write(path, x, 16000, subtype="FLOAT")
    write_csv(
        str(tmp_path / "r.csv"),
        [{"ID": "r", "duration": 2.0, "wav": path}],
        ["ID", "duration", "wav"],
    )
    ds = pretrain_dataset(str(tmp_path / "r.csv"), crop_seconds=0.5)
    starts = set()
    for _ in range(4):
        sig = ds[0]["sig"].numpy()
        start = int(round(sig[0] * 32000))
        np.testing.assert_array_equal(sig, x[start : start + 8000])
        starts.add(start)
    assert len(starts) > 1
    start_ds = pretrain_dataset(
        str(tmp_path / "r.csv"), crop_seconds=0.5, mode="start"
    )
    np.testing.assert_array_equal(start_ds[0]["sig"].numpy(), x[:8000])


def test_dataloader_workers_with_bad_clip(tmp_path):
    csv = _manifest(tmp_path, SPEC)
    record = str(tmp_path / "skipped.txt")
    ds = pretrain_dataset(
        csv, 0.5, skip_counter=SkipCounter("train", record_file=record)
    )
    loader = torch.utils.data.DataLoader(
        ds, batch_size=2, num_workers=2, collate_fn=PaddedBatch
    )
    ids = []
    for batch in loader:
        assert batch.sig.data.shape == (2, 8000)
        ids += batch.id
    assert ids == ["a", "b", "c", "d"]
    assert list(SkipCounter.read_record(record)) == [read_csv(csv)[1]["wav"]]


def test_validate_manifest(tmp_path):
    csv = _manifest(tmp_path, SPEC + [("e", 0.1, "nan", "cat")])
    clean = str(tmp_path / "clean.csv")
    bad = validate_manifest(csv, out_csv=clean)
    assert [b[0] for b in bad] == ["b"]
    bad = validate_manifest(csv, out_csv=clean, decode=True)
    assert [b[0] for b in bad] == ["b", "e"] and "non-finite" in bad[1][2]
    assert [r["ID"] for r in read_csv(clean)] == ["a", "c", "d"]
    assert list(read_csv(clean)[0]) == FIELDS


def test_persistent_workers_follow_set_epoch(tmp_path):
    """Seeded random crops change with the epoch also in workers kept alive across epochs."""
    import numpy as np
    import soundfile as sf
    from speechbrain.dataio.batch import PaddedBatch
    from torch.utils.data import DataLoader

    from aasp_sb.data.folder import write_csv
    from aasp_sb.data.pipeline import pretrain_dataset

    rows = []
    for i in range(2):
        path = tmp_path / f"c{i}.wav"
        sf.write(str(path), np.random.default_rng(i).standard_normal(16000).astype("float32"), 16000)
        rows.append({"ID": f"c{i}", "duration": 1.0, "wav": str(path)})
    csv = tmp_path / "m.csv"
    write_csv(str(csv), rows, ["ID", "duration", "wav"])
    ds = pretrain_dataset(str(csv), 0.2, mode="random", seed=3)
    loader = DataLoader(ds, batch_size=2, num_workers=1, persistent_workers=True,
                        collate_fn=PaddedBatch)
    seen = []
    for epoch in (1, 2, 1):
        ds.set_epoch(epoch)
        seen.append(next(iter(loader)).sig.data.clone())
    assert not torch.equal(seen[0], seen[1])  # a new epoch, new crops
    assert torch.equal(seen[0], seen[2])  # the same epoch, the same crops
