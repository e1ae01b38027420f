#!/usr/bin/env python3
"""Data path at AudioSet scale: preparation, index memory, shard reads.

A benchmark, not a test: it simulates the scale of the full AudioSet (about
2 million clips) with synthetic data on the CPU and prints what the numbers
extrapolate to. Sections (``--sections``, default all):

``prepare``
    :func:`aasp_sb.data.prepare.prepare_corpus` (listing, stat, header
    reads, manifests) on a synthetic corpus of ``--files`` short WAV files
    (default 20,000), from scratch with 0 (in-process), 1 and 2 header
    processes (interleaved, ``--reps`` rounds, a fresh save folder each), the
    header reads alone (:func:`~aasp_sb.data.folder.probe_files`) with 0, 1,
    2 processes, then incremental re-runs: nothing changed, and 1% of the
    files rewritten.
``index``
    memory of a shard index of ``--index-clips`` entries (default 1 M,
    11-character AudioSet IDs): today's memory-mapped ``index.npy`` +
    ``ids.npy`` against the former representation (``index.csv`` parsed into
    dicts, one Python string per ID and three int64 arrays), each loaded in
    a fresh forked process: anonymous (private) memory after loading, its
    peak while loading, and the anonymous memory a forked DataLoader worker
    copies (copy-on-write, private dirty) by reading every entry once.
``read``
    clips/s of random 6.08 s crops (608 frames, the base config) from
    ``--read-clips`` synthetic 10 s clips (1001 x 80 float16) in shards of
    ``--shard-size``, through ``DataLoader`` with 0, 1, 2 workers, with the
    default open-file bound (64, fewer than the shards) and with every shard
    open; against the base step's clip consumption (``--base-step-ms``,
    default: the CPU base step of ``benchmarks/README.md``, batch 2).

Usage::

    python benchmarks/data_scale.py                 # all sections, ~3-5 min
    python benchmarks/data_scale.py --sections read --workers 0 2 4 8

Times are wall-clock (the work spans processes). The last line is
``summary key=value ...``.
"""

import argparse
import json
import os
import shutil
import statistics
import sys
import time
import wave

import bench_utils as bu
import numpy as np
import torch

from aasp_sb.data.folder import probe_files, read_csv, write_csv
from aasp_sb.data.prepare import prepare_corpus
from aasp_sb.data.shards import (
    INDEX_DTYPE,
    LogMelShardDataset,
    write_feature_shards,
)

SECTIONS = ("prepare", "index", "read")
FULL_AUDIOSET = 2_000_000
BASE_STEP_MS_CPU = 5664.0  # benchmarks/README.md, base, batch 2, CPU
BASE_STEP_BATCH = 2


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--sections", nargs="+", choices=SECTIONS, default=list(SECTIONS))
    p.add_argument("--files", type=int, default=20000)
    p.add_argument("--file-seconds", type=float, default=0.1)
    p.add_argument("--reps", type=int, default=2)
    p.add_argument("--index-clips", type=int, default=1_000_000)
    p.add_argument("--read-clips", type=int, default=1500)
    p.add_argument("--read-items", type=int, default=3000)
    p.add_argument("--shard-size", type=int, default=8)
    p.add_argument("--crop-frames", type=int, default=608)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--base-step-ms", type=float, default=BASE_STEP_MS_CPU)
    p.add_argument("--base-batch", type=int, default=BASE_STEP_BATCH)
    p.add_argument("--threads", type=int, default=1, help="torch threads")
    p.add_argument("--workdir", default=None, help="keep data here (default: temp)")
    return p.parse_args(argv)


def write_wav(path, samples, rng, sr=16000):
    """A small PCM WAV file (the standard library: much faster than libsndfile)."""
    x = (rng.standard_normal(samples) * 3000).astype("<i2")
    with wave.open(path, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(sr)
        w.writeframes(x.tobytes())


def make_corpus(root, n, seconds, rng):
    """``n`` WAV files in 100 sub-folders; returns their paths."""
    paths = []
    base = int(seconds * 16000)
    for i in range(n):
        d = os.path.join(root, f"d{i % 100:02d}")
        if i < 100:
            os.makedirs(d, exist_ok=True)
        path = os.path.join(d, f"clip{i:06d}.wav")
        write_wav(path, base + (i % 17) * 16, rng)
        paths.append(path)
    return paths


def _cpu_s():
    """CPU seconds of this process and its reaped children (pool workers)."""
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


def bench_prepare(args, work, out):
    rng = np.random.default_rng(0)
    corpus = os.path.join(work, "corpus")
    t0 = time.perf_counter()
    paths = make_corpus(corpus, args.files, args.file_seconds, rng)
    print(f"[prepare] wrote {len(paths)} files in {time.perf_counter() - t0:.1f} s")
    times = {0: [], 1: [], 2: []}
    run = 0
    for rep in range(args.reps):
        order = [0, 1, 2] if rep % 2 == 0 else [2, 1, 0]
        for procs in order:
            save = os.path.join(work, f"prep_{run}")
            run += 1
            t0 = time.perf_counter()
            rec = prepare_corpus(corpus, save, processes=procs)
            times[procs].append(time.perf_counter() - t0)
            assert rec["headers_read"] == len(paths), rec
            if procs != 2 or rep != args.reps - 1:
                shutil.rmtree(save)
            else:
                kept = save
    rates = {p: len(paths) / statistics.median(t) for p, t in times.items()}
    probe = {0: [], 1: [], 2: []}
    cpu = {0: [], 1: [], 2: []}
    for rep in range(args.reps + 1):
        for procs in ([0, 1, 2] if rep % 2 == 0 else [2, 1, 0]):
            t0, c0 = time.perf_counter(), _cpu_s()
            probe_files(paths, processes=procs)
            probe[procs].append(time.perf_counter() - t0)
            cpu[procs].append(_cpu_s() - c0)
    cpu_ms = {p: 1000 * statistics.median(c) / len(paths) for p, c in cpu.items()}
    probe_rates = {p: len(paths) / statistics.median(t) for p, t in probe.items()}
    for p, t in probe.items():
        print(
            f"[prepare] header reads only, processes={p}: "
            f"{probe_rates[p]:.0f} files/s over {[round(x, 2) for x in t]} s; "
            f"CPU {cpu_ms[p]:.3f} ms per file (all processes)"
        )
    for p, t in times.items():
        print(
            f"[prepare] processes={p}: median {statistics.median(t):.2f} s "
            f"({rates[p]:.0f} files/s) over {t}"
        )
    t0 = time.perf_counter()
    rec = prepare_corpus(corpus, kept, processes=2)
    t_same = time.perf_counter() - t0
    assert rec["headers_read"] == 0
    changed = paths[:: 100]
    for p in changed:
        write_wav(p, int(args.file_seconds * 16000) + 5, rng)
    t0 = time.perf_counter()
    rec = prepare_corpus(corpus, kept, processes=2)
    t_changed = time.perf_counter() - t0
    assert rec["headers_read"] == len(changed), rec
    print(
        f"[prepare] incremental, nothing changed: {t_same:.2f} s; "
        f"{len(changed)} files changed: {t_changed:.2f} s"
    )
    out.update(
        prep_files=len(paths),
        prep_files_per_s_p0=rates[0],
        prep_files_per_s_p1=rates[1],
        prep_files_per_s_p2=rates[2],
        prep_speedup_p2_over_p1=rates[2] / rates[1],
        probe_files_per_s_p0=probe_rates[0],
        probe_files_per_s_p1=probe_rates[1],
        probe_files_per_s_p2=probe_rates[2],
        probe_cpu_ms_per_file=cpu_ms[0],
        prep_rerun_unchanged_s=t_same,
        prep_rerun_1pct_changed_s=t_changed,
    )


def _smaps(field):
    with open("/proc/self/smaps_rollup", encoding="ascii") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024  # MB
    raise KeyError(field)


def _anon_private_dirty():
    """MB of private dirty *anonymous* memory (heap: copy-on-write copies).

    File-backed pages are left out: a freshly written file's pages are dirty
    in the page cache and would count as private dirty while being read.
    """
    total, anon = 0, False
    with open("/proc/self/smaps", encoding="ascii", errors="replace") as f:
        for line in f:
            head = line.split()
            if head and "-" in head[0] and len(head) >= 5 and ":" in head[3]:
                anon = head[4] == "0"  # inode 0: heap, stack, anonymous maps
            elif anon and line.startswith("Private_Dirty:"):
                total += int(head[1])
    return total / 1024


def _in_child(fn):
    """Runs ``fn()`` in a forked child and returns its JSON-able result."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # child
        os.close(r)
        try:
            res = fn()
        except BaseException as err:  # report, never return into the parent
            res = {"error": repr(err)}
        os.write(w, json.dumps(res).encode())
        os._exit(0)
    os.close(w)
    chunks = []
    while True:
        data = os.read(r, 1 << 16)
        if not data:
            break
        chunks.append(data)
    os.close(r)
    os.waitpid(pid, 0)
    res = json.loads(b"".join(chunks))
    if "error" in res:
        raise RuntimeError(res["error"])
    return res


def make_index(folder, n, rng):
    """A synthetic shard index of ``n`` clips (index.npy, ids.npy, index.csv)."""
    os.makedirs(folder, exist_ok=True)
    alphabet = np.frombuffer(
        b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_",
        dtype=np.uint8,
    )
    blob = alphabet[rng.integers(0, 64, size=n * 11)]
    index = np.zeros(n, dtype=INDEX_DTYPE)
    index["shard"] = np.arange(n) // 512
    index["num_frames"] = 1001
    index["offset"] = (np.arange(n) % 512) * 1001
    index["id_end"] = np.arange(1, n + 1) * 11
    np.save(os.path.join(folder, "index.npy"), index)
    np.save(os.path.join(folder, "ids.npy"), blob)
    with open(os.path.join(folder, "meta.json"), "w") as f:
        json.dump({"options": {"front_end": {"n_mels": 80}}}, f)
    ids = blob.tobytes().decode()
    write_csv(
        os.path.join(folder, "index.csv"),
        (
            {
                "ID": ids[11 * i : 11 * i + 11],
                "shard": int(index["shard"][i]),
                "offset": int(index["offset"][i]),
                "num_frames": 1001,
            }
            for i in range(n)
        ),
        ["ID", "shard", "offset", "num_frames"],
    )


def _old_load(folder):
    """What LogMelShardDataset.__init__ did before the compact index."""
    rows = read_csv(os.path.join(folder, "index.csv"))
    ids = [r["ID"] for r in rows]
    shard = np.array([int(r["shard"]) for r in rows], dtype=np.int64)
    offset = np.array([int(r["offset"]) for r in rows], dtype=np.int64)
    frames = np.array([int(r["num_frames"]) for r in rows], dtype=np.int64)
    del rows
    return ids, (shard, offset, frames)


def _touch_old(state):
    ids, arrays = state
    total = 0
    for i, uid in enumerate(ids):  # what a worker does over an epoch
        total += len(uid) + int(arrays[0][i])
    return total


def _touch_new(ds):
    total = 0
    for i in range(len(ds)):
        total += len(ds.ids[i]) + int(ds.shard[i])
    return total


def _measure(load, touch):
    def child():
        anon0 = _smaps("Anonymous")
        bu.reset_peak_rss()
        rss0 = bu.rss_mb()
        t0 = time.perf_counter()
        state = load()
        load_s = time.perf_counter() - t0
        res = {
            "load_s": load_s,
            "anon_mb": _smaps("Anonymous") - anon0,
            "peak_extra_mb": bu.peak_rss_mb() - rss0,
        }

        def worker():
            dirty0 = _anon_private_dirty()
            t0 = time.perf_counter()
            touch(state)
            return {
                "cow_mb": _anon_private_dirty() - dirty0,
                "epoch_s": time.perf_counter() - t0,
            }

        res.update(_in_child(worker))
        return res

    return _in_child(child)


def bench_index(args, work, out):
    rng = np.random.default_rng(1)
    folder = os.path.join(work, "index")
    t0 = time.perf_counter()
    make_index(folder, args.index_clips, rng)
    print(f"[index] wrote a {args.index_clips}-entry index in {time.perf_counter() - t0:.1f} s")
    files_mb = sum(
        os.path.getsize(os.path.join(folder, n)) for n in ("index.npy", "ids.npy")
    ) / 2**20
    new = _measure(lambda: LogMelShardDataset(folder), _touch_new)
    old = _measure(lambda: _old_load(folder), _touch_old)
    per_m = 1e6 / args.index_clips
    for name, res in (("compact (now)", new), ("former", old)):
        print(
            f"[index] {name}: load {res['load_s']:.2f} s, anonymous "
            f"{res['anon_mb'] * per_m:.1f} MB/M clips, load peak "
            f"{res['peak_extra_mb'] * per_m:.1f} MB/M, worker copy-on-write "
            f"{res['cow_mb'] * per_m:.1f} MB/M (one pass {res['epoch_s']:.2f} s)"
        )
    print(f"[index] compact index files: {files_mb * per_m:.1f} MB/M clips (page cache, shared)")
    out.update(
        index_clips=args.index_clips,
        index_files_mb_per_m=files_mb * per_m,
        index_new_anon_mb_per_m=new["anon_mb"] * per_m,
        index_new_cow_mb_per_m=new["cow_mb"] * per_m,
        index_new_load_s=new["load_s"],
        index_old_anon_mb_per_m=old["anon_mb"] * per_m,
        index_old_peak_mb_per_m=old["peak_extra_mb"] * per_m,
        index_old_cow_mb_per_m=old["cow_mb"] * per_m,
        index_old_load_s=old["load_s"],
    )


def _throughput(folder, workers, max_open, args):
    ds = LogMelShardDataset(
        folder, crop_frames=args.crop_frames, seed=0, max_open_files=max_open
    )
    loader = torch.utils.data.DataLoader(
        ds,
        batch_size=args.batch,
        shuffle=True,
        num_workers=workers,
        generator=torch.Generator().manual_seed(0),
        drop_last=True,
        persistent_workers=workers > 0,
    )
    seen = 0
    t0 = None
    while seen < args.read_items:
        for batch in loader:
            if t0 is None:  # from the first batch on: no worker start-up
                t0 = time.perf_counter()
                continue
            seen += batch["feats"].shape[0]
            if seen >= args.read_items:
                break
    return seen / (time.perf_counter() - t0)


def bench_read(args, work, out):
    folder = os.path.join(work, "shards")
    rng = np.random.default_rng(2)
    t0 = time.perf_counter()
    clip = rng.standard_normal((1001, 80)).astype(np.float16)
    clips = ((f"c{i}", np.roll(clip, i, axis=0)) for i in range(args.read_clips))
    info = write_feature_shards(clips, folder, shard_size=args.shard_size)
    size_mb = args.read_clips * 1001 * 80 * 2 / 2**20
    print(
        f"[read] wrote {info['num_shards']} shards ({size_mb:.0f} MB) in "
        f"{time.perf_counter() - t0:.1f} s"
    )
    configs = [(w, 64) for w in args.workers] + [(args.workers[-1], 10**6)]
    rates = {c: [] for c in configs}
    for rep in range(args.reps):
        order = configs if rep % 2 == 0 else configs[::-1]
        for c in order:
            rates[c].append(_throughput(folder, c[0], c[1], args))
    need = args.base_batch / (args.base_step_ms / 1000.0)
    for (w, m), r in rates.items():
        med = statistics.median(r)
        print(
            f"[read] workers={w} max_open_files={'all' if m > 10**5 else m}: "
            f"{med:.0f} clips/s ({med / need:.0f}x the base step's "
            f"{need:.2f} clips/s) over {[round(x) for x in r]}"
        )
    best_w = args.workers[-1]
    out.update(
        read_shards=info["num_shards"],
        read_base_step_clips_per_s=need,
        **{
            f"read_clips_per_s_w{w}": statistics.median(rates[(w, 64)])
            for w in args.workers
        },
        read_all_open_over_bounded=statistics.median(rates[(best_w, 10**6)])
        / statistics.median(rates[(best_w, 64)]),
    )


def extrapolate(out):
    lines = []
    n = FULL_AUDIOSET
    if "prep_files_per_s_p2" in out:
        for p in (1, 2):
            rate = out[f"prep_files_per_s_p{p}"]
            lines.append(
                f"prepare 2M files with {p} process(es): {n / rate / 60:.1f} min"
            )
        lines.append(
            "header reads alone, CPU-bound (local disk, page cache): "
            f"{n * out['probe_cpu_ms_per_file'] / 1000 / 60:.1f} CPU-min; "
            f"with 16 free cores {n * out['probe_cpu_ms_per_file'] / 1000 / 16:.0f} s"
        )
        lines.append(
            "re-run, nothing changed: "
            f"{out['prep_rerun_unchanged_s'] * n / out['prep_files'] / 60:.1f} min"
        )
    if "index_new_anon_mb_per_m" in out:
        lines.append(
            "index for 2M clips per process: compact "
            f"{2 * out['index_new_anon_mb_per_m']:.0f} MB private + "
            f"{2 * out['index_files_mb_per_m']:.0f} MB shared page cache; "
            f"former {2 * out['index_old_anon_mb_per_m']:.0f} MB private "
            f"(+{2 * out['index_old_cow_mb_per_m']:.0f} MB per worker)"
        )
    if "read_base_step_clips_per_s" in out:
        lines.append(
            "2M clips = 3907 shards of 512 (~320 GB float16); open files per "
            "process <= 64 whatever the count"
        )
    for line in lines:
        print(f"[2M] {line}")


def main(argv=None):
    args = parse_args(argv)
    bu.set_threads(args.threads)
    if args.workdir:
        work = os.path.abspath(args.workdir)
        if os.path.exists(work):
            sys.exit(f"--workdir '{work}' exists; give a new folder")
        os.makedirs(work)
    else:
        work = bu.temp_dir("aasp_data_scale_")
    out = {}
    if "prepare" in args.sections:
        bench_prepare(args, work, out)
    if "index" in args.sections:
        bench_index(args, work, out)
    if "read" in args.sections:
        bench_read(args, work, out)
    extrapolate(out)
    print("summary " + " ".join(
        f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
        for k, v in out.items()
    ))


if __name__ == "__main__":
    main()
