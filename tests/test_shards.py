"""Log-mel shards: round trip, bad clips, resume (also after a kill), crops,
workers, compact index, bounded open files at 2,000 shards."""

import json
import os
import pickle
import re
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import soundfile as sf
import torch

from aasp_sb.data.audio import load_audio
from aasp_sb.data.folder import read_csv, write_csv
from aasp_sb.data.shards import (
    SILENCE,
    ClipIds,
    LogMelShardDataset,
    build_logmel_shards,
    collate_shard_items,
    write_feature_shards,
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
    os.remove(os.path.join(folder, "shard_00001.npy"))
    # An interrupted shard leaves a stale raw file behind; it must not matter.
    open(os.path.join(folder, "shard_00001.raw.tmp"), "wb").write(b"xx")
    open(os.path.join(folder, "shard_00001.npy.tmp.npy"), "wb").write(b"half")
    # ... and a kill mid-write a torn journal line.
    with open(os.path.join(folder, "shards.jsonl"), "a") as f:
        f.write('{"shard": 1, "ids": ["c')
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
    assert not [f for f in os.listdir(folder) if "tmp" in f]
    lines = open(os.path.join(folder, "shards.jsonl")).read().splitlines()
    assert [json.loads(x)["shard"] for x in lines if x.endswith("}")] == [0, 1, 2, 1]
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
    _ = ds[0]  # opens a shard file; pickling must drop it
    assert not pickle.loads(pickle.dumps(ds))._files.open
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


def test_compact_index_and_legacy_folder(built, tmp_path):
    folder, _ = built
    ds = LogMelShardDataset(folder, crop_frames=16, seed=1)
    # No per-clip Python objects: a memory-mapped record array and ID bytes.
    assert isinstance(ds.index, np.memmap) and isinstance(ds.ids, ClipIds)
    assert ds.index.dtype.itemsize == 24 and list(ds.ids) == list(LENGTHS)
    state = pickle.dumps(ds)  # what a spawned worker receives
    # not the ID table (its bytes, at least 8 of them: no chance match) nor the index arrays;
    # a 2-byte ID alone can occur by chance, e.g. in the manifest's SHA-1 hex
    blob = np.asarray(ds.ids.blob).tobytes()
    assert len(blob) >= 8 and blob not in state and len(state) < 2000
    assert not {"index", "ids", "shard", "offset", "num_frames"} & set(ds.__getstate__())
    clone = pickle.loads(state)
    assert all(torch.equal(clone[i]["feats"], ds[i]["feats"]) for i in range(5))
    # A folder written before index.npy existed reads from index.csv.
    legacy = tmp_path / "legacy"
    legacy.mkdir()
    for name in os.listdir(folder):
        if name not in ("index.npy", "ids.npy"):
            os.link(os.path.join(folder, name), legacy / name)
    old = LogMelShardDataset(str(legacy), crop_frames=16, seed=1)
    assert list(old.ids) == list(ds.ids)
    assert all(torch.equal(old[i]["feats"], ds[i]["feats"]) for i in range(5))


def _fork():
    import multiprocessing

    if "fork" not in multiprocessing.get_all_start_methods():
        pytest.skip("needs fork")
    return multiprocessing.get_context("fork")


def _open_fds():
    return len(os.listdir("/proc/self/fd"))


def _read_all_limited(folder, out):
    """Child process: open-file limit 256, read every clip of ``folder``."""
    import resource

    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    resource.setrlimit(resource.RLIMIT_NOFILE, (256, hard))
    torch.set_num_threads(1)
    base = _open_fds()
    ds = LogMelShardDataset(folder, max_open_files=32)
    whole, peak = [], 0
    for i in range(len(ds)):  # every clip in shard order: every shard opened
        whole.append(ds[i]["feats"].numpy())
        peak = max(peak, _open_fds())
    # DataLoader workers (limit inherited), shuffled seeded crops: the same
    # crops as read in this process.
    crops = LogMelShardDataset(folder, crop_frames=2, seed=5, max_open_files=32)
    loader = torch.utils.data.DataLoader(
        crops,
        batch_size=50,
        shuffle=True,
        num_workers=2,
        generator=torch.Generator().manual_seed(0),
    )
    by_worker = {}
    for batch in loader:
        for uid, feats in zip(batch["id"], batch["feats"]):
            by_worker[uid] = feats.numpy()
    same = all(
        np.array_equal(by_worker[crops.ids[i]], crops[i]["feats"].numpy())
        for i in range(len(crops))
    )
    # Without the bound the same reads run out of descriptors.
    unbounded = LogMelShardDataset(folder, max_open_files=10**6)
    error = None
    try:
        for i in range(len(unbounded)):
            unbounded[i]
    except OSError as err:
        error = str(err)
    unbounded.close()
    np.save(out + ".npy", np.concatenate(whole))
    with open(out + ".json", "w") as f:
        json.dump(
            {
                "n": len(ds),
                "base": base,
                "peak": peak,
                "same": same,
                "seen": len(by_worker),
                "unbounded_error": error,
            },
            f,
        )


def test_reads_2000_shards_with_256_open_files(tmp_path):
    pytest.importorskip("resource")
    if not os.path.isdir("/proc/self/fd"):
        pytest.skip("needs /proc/self/fd")
    rng = np.random.default_rng(0)
    clips = [
        (f"c{i}", rng.standard_normal((2 + i % 5, 8)).astype(np.float16))
        for i in range(2000)
    ]
    folder = str(tmp_path / "many")
    assert write_feature_shards(clips, folder, shard_size=1)["num_shards"] == 2000
    out = str(tmp_path / "all")
    child = _fork().Process(target=_read_all_limited, args=(folder, out))
    child.start()
    child.join(300)
    assert child.exitcode == 0
    res = json.load(open(out + ".json"))
    assert res["n"] == 2000 and res["seen"] == 2000 and res["same"]
    # The LRU bound + 2 index maps + the shared-memory epoch.
    assert res["peak"] <= res["base"] + 32 + 3
    assert "Too many open files" in (res["unbounded_error"] or "")
    expected = np.concatenate([c for _, c in clips]).astype(np.float32)
    np.testing.assert_array_equal(np.load(out + ".npy"), expected)


KILLABLE = r"""
import sys, time
from aasp_sb.data import shards
finish = shards._ShardWriter.finish
def slow_finish(self):  # slowed down so that the kill lands mid-build
    time.sleep(0.25)
    return finish(self)
shards._ShardWriter.finish = slow_finish
shards.build_logmel_shards(sys.argv[1], sys.argv[2], shard_size=2, num_workers=2)
"""


def _tree_bytes(folder):
    return {
        name: open(os.path.join(folder, name), "rb").read()
        for name in sorted(os.listdir(folder))
        if name != "shards.jsonl"  # its line order follows completion order
    }


def test_killed_build_resumes_to_the_same_result(manifest, tmp_path):
    tmp, _ = manifest
    rows = []
    rng = np.random.default_rng(1)
    for i in range(24):
        path = str(tmp_path / f"k{i}.wav")
        x = 0.1 * rng.standard_normal(1600 + 37 * i)
        sf.write(path, x.astype(np.float32), 16000)
        rows.append({"ID": f"k{i}", "wav": path})
    rows.insert(7, {"ID": "bad", "wav": str(tmp / "bad.wav")})
    csv = str(tmp_path / "m.csv")
    write_csv(csv, rows, ["ID", "wav"])
    ref = str(tmp_path / "ref")
    build_logmel_shards(csv, ref, shard_size=2)  # uninterrupted, serial

    # A parallel build (2 worker processes) killed with SIGKILL part-way.
    out = str(tmp_path / "killed")
    log = open(tmp_path / "killed.log", "w+")
    proc = subprocess.Popen(
        [sys.executable, "-c", KILLABLE, csv, out],
        start_new_session=True,  # its own process group: workers die with it
        stdout=log,
        stderr=log,
    )
    journal = os.path.join(out, "shards.jsonl")
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        if os.path.exists(journal) and len(open(journal).readlines()) >= 3:
            break
        time.sleep(0.01)
    alive = proc.poll() is None
    if alive:
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    log.seek(0)
    assert alive, "the build ended before it was killed:\n" + log.read()[-3000:]
    log.close()
    done = len(open(journal).readlines())
    assert 3 <= done < 13 and not os.path.exists(os.path.join(out, "index.npy"))

    stamps = {
        name: os.stat(os.path.join(out, name)).st_mtime_ns
        for name in os.listdir(out)
        if re.fullmatch(r"shard_\d{5}\.npy", name)  # not a killed .tmp.npy
    }
    build_logmel_shards(csv, out, shard_size=2, num_workers=2)
    # The finished shards were kept, the others built, and the result is
    # byte for byte the uninterrupted one.
    kept = [
        n
        for n, t in stamps.items()
        if os.stat(os.path.join(out, n)).st_mtime_ns == t
    ]
    assert len(kept) >= 3
    assert _tree_bytes(out) == _tree_bytes(ref)


def test_persistent_workers_follow_set_epoch(built):
    folder, _ = built
    ds = LogMelShardDataset(folder, crop_frames=8, seed=3)
    loader = torch.utils.data.DataLoader(
        ds, batch_size=None, num_workers=2, persistent_workers=True
    )
    for epoch in (0, 1, 2):
        ds.set_epoch(epoch)  # as AaSPBrain.on_stage_start does
        got = {item["id"]: item["feats"] for item in loader}
        for i in range(len(ds)):
            assert torch.equal(got[ds.ids[i]], ds[i]["feats"]), (epoch, i)
    assert not torch.equal(got["c0"], LogMelShardDataset(folder, 8, seed=3)[0]["feats"])


def test_resumes_a_build_of_the_former_layout(manifest, built, tmp_path):
    """Shards finished before shards.jsonl existed (per-shard .csv) are kept."""
    _, csv = manifest
    folder = str(tmp_path / "old")
    build_logmel_shards(csv, folder, shard_size=2)
    for line in open(os.path.join(folder, "shards.jsonl")):
        rec = json.loads(line)
        k = rec["shard"]
        write_csv(
            os.path.join(folder, f"shard_{k:05d}.csv"),
            [
                {"ID": u, "offset": o, "num_frames": n}
                for u, o, n in zip(rec["ids"], rec["offsets"], rec["frames"])
            ],
            ["ID", "offset", "num_frames"],
        )
        with open(os.path.join(folder, f"shard_{k:05d}.skipped"), "w") as f:
            f.writelines(f"{p}\t{r}\n" for p, r in rec["skipped"])
    for name in ("shards.jsonl", "index.npy", "ids.npy", "shard_00002.csv"):
        os.remove(os.path.join(folder, name))  # shard 2 was not finished
    stamps = [os.stat(os.path.join(folder, f"shard_0000{k}.npy")).st_mtime_ns for k in range(3)]
    out = build_logmel_shards(csv, folder, shard_size=2)
    assert out["num_clips"] == 5 and out["num_skipped"] == 1
    after = [os.stat(os.path.join(folder, f"shard_0000{k}.npy")).st_mtime_ns for k in range(3)]
    assert after[:2] == stamps[:2] and after[2] != stamps[2]
    ref = {n: b for n, b in _tree_bytes(built[0]).items() if not n.endswith((".csv", ".skipped")) or n == "index.csv"}
    got = {n: b for n, b in _tree_bytes(folder).items() if not n.endswith((".csv", ".skipped")) or n == "index.csv"}
    assert got == ref


def test_shards_of_another_front_end_are_refused(tmp_path):
    import json

    from aasp_sb.data.shards import check_front_end
    from aasp_sb.features import LogMel

    folder = tmp_path / "sh"
    folder.mkdir()
    legacy = {"sample_rate": 16000, "n_fft": 400, "win_length": 400, "hop_length": 160,
              "n_mels": 80, "f_min": 50.0, "f_max": 8000.0, "eps": float(torch.finfo().eps)}
    (folder / "meta.json").write_text(json.dumps({"options": {"front_end": legacy}}))
    check_front_end(folder, LogMel(mel_scale="htk", mel_norm=None))  # what they were built with
    with pytest.raises(ValueError, match="mel_scale"):
        check_front_end(folder, LogMel())  # M2D's front end: refused
