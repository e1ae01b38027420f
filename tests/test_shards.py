"""Log-mel shards: round trip, bad clips, resume, dataset crops, workers."""

import json
import os
import pickle

import numpy as np
import pytest
import soundfile as sf
import torch

from aasp_sb.data.audio import load_audio
from aasp_sb.data.folder import read_csv, write_csv
from aasp_sb.data.shards import (
    SILENCE,
    LogMelShardDataset,
    build_logmel_shards,
    collate_shard_items,
)
from aasp_sb.features import Features, LogMel

LENGTHS = {
    "c0": (1.0, 16000),
    "c1": (0.5, 8000),
    "c2": (0.3, 44100),
    "c3": (0.8, 22050),
    "c4": (0.05, 16000),
}


@pytest.fixture(scope="module")
def manifest(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("shards")
    rows = []
    rng = np.random.default_rng(0)
    for i, (uid, (sec, sr)) in enumerate(LENGTHS.items()):
        path = str(tmp / f"{uid}.wav")
        t = np.arange(int(sec * sr)) / sr
        x = (
            0.3
            * np.sin(2 * np.pi * (300 + 200 * i) * t)
            * (1 + np.sin(2 * np.pi * 9 * t))
        )
        sf.write(
            path,
            (x + 0.01 * rng.standard_normal(len(t))).astype(np.float32),
            sr,
        )
        rows.append({"ID": uid, "duration": sec, "wav": path})
        if i == 1:  # a corrupt clip in the middle of the manifest
            bad = str(tmp / "bad.wav")
            with open(bad, "wb") as f:
                f.write(b"garbage" * 100)
            rows.append({"ID": "bad", "duration": 1.0, "wav": bad})
    csv = str(tmp / "manifest.csv")
    write_csv(csv, rows, ["ID", "duration", "wav"])
    return tmp, csv


@pytest.fixture(scope="module")
def built(manifest):
    tmp, csv = manifest
    out_folder = str(tmp / "out")
    out = build_logmel_shards(csv, out_folder, shard_size=2)
    return out_folder, out


def test_round_trip_equals_direct_logmel(manifest, built):
    _, csv = manifest
    folder, out = built
    assert out == {
        "index": os.path.join(folder, "index.csv"),
        "num_clips": 5,
        "num_skipped": 1,
        "num_shards": 3,
    }
    index = read_csv(out["index"])
    assert [r["ID"] for r in index] == list(LENGTHS)
    assert [int(r["shard"]) for r in index] == [
        0,
        0,
        1,
        2,
        2,
    ]  # "bad" was row 2
    logmel = LogMel()
    paths = {r["ID"]: r["wav"] for r in read_csv(csv)}
    for r in index:
        arr = np.load(
            os.path.join(folder, f"shard_{int(r['shard']):05d}.npy"),
            mmap_mode="r",
        )
        assert arr.dtype == np.float16 and arr.shape[1] == 80
        off, n = int(r["offset"]), int(r["num_frames"])
        direct = logmel(load_audio(paths[r["ID"]]).unsqueeze(0))[0].numpy()
        assert n == direct.shape[0]
        np.testing.assert_allclose(
            arr[off : off + n].astype(np.float32), direct, rtol=1e-3, atol=2e-2
        )
    skipped = open(os.path.join(folder, "skipped.txt")).read()
    assert paths["bad"] in skipped
    meta = json.load(open(os.path.join(folder, "meta.json")))
    assert (
        meta["stats"]["num_clips"] == 5
        and meta["options"]["front_end"]["n_mels"] == 80
    )
    assert not [f for f in os.listdir(folder) if "tmp" in f]


def test_resume_rebuilds_only_missing_shards(manifest, built, tmp_path):
    _, csv = manifest
    folder = str(tmp_path / "resume")
    build_logmel_shards(csv, folder, shard_size=2)
    for ext in ("npy", "csv"):
        os.remove(os.path.join(folder, f"shard_00001.{ext}"))
    # An interrupted shard leaves a stale raw file behind; it must not matter.
    open(os.path.join(folder, "shard_00001.raw.tmp"), "wb").write(b"xx")
    stamps = {
        k: os.path.getmtime(os.path.join(folder, f"shard_0000{k}.npy"))
        for k in (0, 2)
    }
    out = build_logmel_shards(csv, folder, shard_size=2)
    assert out["num_clips"] == 5 and out["num_skipped"] == 1
    for k, stamp in stamps.items():
        assert (
            os.path.getmtime(os.path.join(folder, f"shard_0000{k}.npy"))
            == stamp
        )
    ref = np.load(os.path.join(built[0], "shard_00001.npy"))
    np.testing.assert_array_equal(
        np.load(os.path.join(folder, "shard_00001.npy")), ref
    )
    with pytest.raises(ValueError, match="other options"):
        build_logmel_shards(csv, folder, shard_size=3)


def test_workers_and_features_object(manifest, built, tmp_path):
    _, csv = manifest
    folder = str(tmp_path / "workers")
    out = build_logmel_shards(
        csv, folder, shard_size=4, features=Features(), num_workers=2
    )
    assert out["num_clips"] == 5 and out["num_shards"] == 2
    a = LogMelShardDataset(folder)
    b = LogMelShardDataset(built[0])
    for i in range(5):  # Features was replaced by its un-normalised LogMel
        assert torch.equal(a[i]["feats"], b[i]["feats"])


def test_dataset_crops(built):
    folder, _ = built
    full = LogMelShardDataset(folder)
    clips = {full[i]["id"]: full[i]["feats"] for i in range(len(full))}
    assert clips["c0"].shape == (101, 80) and clips["c4"].shape == (6, 80)

    crop = 40
    ds = LogMelShardDataset(folder, crop_frames=crop, mode="random", seed=0)
    starts = set()
    for _ in range(5):
        item = ds[0]
        assert (
            item["feats"].shape == (crop, 80)
            and item["feats"].dtype == torch.float32
        )
        assert item["length"] == 1.0
        windows = clips["c0"].unfold(0, crop, 1).permute(0, 2, 1)
        match = (windows == item["feats"]).all(dim=(1, 2)).nonzero()
        assert len(match) >= 1
        starts.add(int(match[0]))
        ds.set_epoch(ds.epoch + 1)
    assert len(starts) > 1  # the epoch changes the crop
    ds.set_epoch(0)
    assert torch.equal(
        ds[0]["feats"], LogMelShardDataset(folder, crop, seed=0)[0]["feats"]
    )

    start = LogMelShardDataset(folder, crop_frames=crop, mode="start")
    assert torch.equal(start[0]["feats"], clips["c0"][:crop])

    short = full.ids.index("c4")  # 6 frames
    rep = LogMelShardDataset(
        folder, crop_frames=crop, mode="start", pad="repeat"
    )[short]
    assert (
        torch.equal(rep["feats"], clips["c4"].repeat(7, 1)[:crop])
        and rep["length"] == 1.0
    )
    rep_rand = LogMelShardDataset(
        folder, crop_frames=crop, pad="repeat", seed=3
    )[short]
    phase = int((clips["c4"] == rep_rand["feats"][0]).all(dim=1).nonzero()[0])
    assert torch.equal(
        rep_rand["feats"], clips["c4"].repeat(8, 1)[phase : phase + crop]
    )
    zero = LogMelShardDataset(folder, crop_frames=crop, pad="zero")[short]
    assert torch.equal(zero["feats"][:6], clips["c4"])
    assert torch.all(zero["feats"][6:] == SILENCE) and zero[
        "length"
    ] == pytest.approx(6 / crop)


def test_dataloader_workers(built):
    folder, _ = built
    ds = LogMelShardDataset(folder, crop_frames=32)
    _ = ds[0]  # opens a memory map; pickling must drop it
    assert pickle.loads(pickle.dumps(ds))._mmaps == {}
    loader = torch.utils.data.DataLoader(ds, batch_size=2, num_workers=2)
    seen = []
    for batch in loader:
        assert batch["feats"].shape[1:] == (32, 80)
        seen += batch["id"]
    assert sorted(seen) == sorted(LENGTHS)
    batch = collate_shard_items(
        [LogMelShardDataset(folder)[i] for i in range(3)]
    )
    assert batch["feats"].shape == (3, 101, 80)
    assert batch["lengths"][0] == 1.0 and batch["lengths"][1] == pytest.approx(
        51 / 101
    )


def test_missing_index(tmp_path):
    with pytest.raises(FileNotFoundError, match="build_logmel_shards"):
        LogMelShardDataset(str(tmp_path))
