#!/usr/bin/env python3
"""The real-recordings benchmark, end to end: build, pre-train, probe, one table.

Steps (outputs under ``--output``, default ``results/real_audio``):

1. ``--build``: gather the recordings and write the manifests
   (:mod:`build`, cached under ``--cache``; needs the Debian packages, which
   ``--apt`` installs as root). Without ``--build`` an existing build is used;
2. pre-train the YAML (default ``hparams/aasp_cpu.yaml``) on the pool twice,
   with AaPE and with the plain stem (``use_aape=False``), as two parallel
   processes of ``--threads`` torch threads each (``--jobs 2``);
3. linear evaluation (the EVAR protocol, :mod:`aasp_sb.evaluation.linear_eval`,
   ``--seeds`` probe seeds) of: the pre-trained AaPE model, the pre-trained
   plain-stem model, both at random initialisation, and the log-mel mean/std
   floor (:class:`LogMelStats`, no learning);
4. shift stability (:func:`aasp_sb.analysis.stability.measure_model_stability`:
   centred cosine of clip embeddings under 1..15-frame shifts) of each
   embedding on the probe tasks' test clips;
5. print ONE table (per-task accuracy with 95 % CIs over the probe seeds, the
   mean over tasks with its CI over seeds, and stability) and write it to
   ``RESULTS.md`` / ``results.json``.

Usage::

    python benchmarks/real_audio/run.py --build --apt      # fresh machine, as root
    python benchmarks/real_audio/run.py                    # after the first build

Re-running reuses finished pre-training runs and cached embeddings
(``--fresh`` starts the pre-training over).
"""

import argparse
import hashlib
import json
import logging
import os
import pathlib
import subprocess
import sys
import time

import torch

ROOT = pathlib.Path(__file__).resolve().parents[2]
HERE = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import build as rab  # noqa: E402

logger = logging.getLogger("real_audio")

DEFAULT_YAML = ROOT / "hparams" / "aasp_cpu.yaml"
MODELS = ("AaPE, pre-trained", "plain stem, pre-trained", "AaPE, random init",
          "plain stem, random init", "log-mel mean/std")


# ================================================================ log-mel floor
class LogMelStats(torch.nn.Module):
    """The no-learning floor: per-mel-bin mean and std over time of the normalised log-mel.

    Quacks like :class:`aasp_sb.inference.AaSPEncoder` for
    :func:`aasp_sb.embed.embed_clips` (``embed_batch``, ``embedding_size``,
    ``sample_rate``, ``model_fingerprint``) and like an encoder for
    :func:`aasp_sb.analysis.stability.measure_model_stability` (``forward``,
    ``clip_embedding``, ``patch_size``), so both see the same crops and
    shifts as the models.

    Arguments
    ---------
    features : aasp_sb.features.Features
        The front end (the benchmarked YAML's).
    patch_size : tuple
        Reported patch size (stability bookkeeping only).

    Example
    -------
    >>> import torch
    >>> from aasp_sb.features import Features
    >>> floor = LogMelStats(Features())
    >>> floor.embed_batch(torch.randn(2, 16000), torch.tensor([1.0, 0.5])).shape
    torch.Size([2, 160])
    """

    def __init__(self, features, patch_size=(16, 16)):
        super().__init__()
        self.features = features
        self.patch_size = tuple(patch_size)
        self.device = torch.device("cpu")

    @property
    def stem(self):
        """Itself (stability reports ``type(encoder.stem).__name__``)."""
        return self

    @property
    def sample_rate(self):
        """Input sample rate."""
        return self.features.logmel.sample_rate

    def embedding_size(self, layer=-1, pooling="mean"):
        """``2 * n_mels``."""
        return 2 * self.features.n_mels

    def model_fingerprint(self):
        """Hash of the front end's settings (the embedding cache key)."""
        lm = self.features.logmel
        desc = json.dumps({"floor": "logmel-mean-std-v1", "logmel": repr(lm),
                           "norm": [float(self.features.normalize.mean),
                                    float(self.features.normalize.std)]}, sort_keys=True)
        return hashlib.sha256(desc.encode()).hexdigest()

    def forward(self, x, lengths=None):
        """``[B, T, F]`` log-mel -> ``(x, valid-frame mask)``."""
        from aasp_sb.features import frame_lengths
        T = x.shape[1]
        n = frame_lengths(lengths, T)
        if n is None:
            n = torch.full((x.shape[0],), T, dtype=torch.long, device=x.device)
        mask = torch.arange(T, device=x.device)[None] < n.to(x.device)[:, None]
        return x, mask

    @staticmethod
    def clip_embedding(out):
        """``[mean; std]`` over the valid frames, ``[B, 2F]``."""
        x, mask = out
        w = mask.to(x.dtype)[..., None]
        cnt = w.sum(1).clamp(min=1)
        mean = (x * w).sum(1) / cnt
        var = (((x - mean[:, None]) ** 2) * w).sum(1) / cnt
        return torch.cat([mean, var.clamp(min=0).sqrt()], dim=-1)

    def embed_batch(self, wavs, wav_lens=None, layer=-1, pooling="mean"):
        """Waveforms ``[B, S]`` -> ``[B, 2F]`` float32."""
        with torch.no_grad():
            return self.clip_embedding(self(self.features(wavs), wav_lens)).float()


# ================================================================ pre-training
def pretrain_command(yaml, pool, out, epochs, overrides):
    """The ``recipes/pretrain/train.py`` command line for one run."""
    cmd = [sys.executable, str(ROOT / "recipes" / "pretrain" / "train.py"), str(yaml),
           f"--data_folder={pathlib.Path(pool['train']).parent}",
           f"--train_csv={pool['train']}", f"--valid_csv={pool['valid']}",
           f"--output_folder={out}", "--device=cpu"]
    if epochs is not None:
        cmd.append(f"--number_of_epochs={epochs}")
    cmd += [f"--{k}={v}" for k, v in overrides.items()]
    return cmd


def check_run_settings(out, settings):
    """Records a run folder's settings, or refuses a finished folder made with other ones.

    Re-running reuses finished pre-trainings, so a folder pre-trained with
    another YAML, epochs or overrides would silently be probed under the new
    name; this stops that. ``settings`` go to ``<out>/run_settings.json``.

    Example
    -------
    >>> out = getfixture("tmp_path")
    >>> check_run_settings(out, {"yaml": "a"})
    >>> check_run_settings(out, {"yaml": "b"})
    Traceback (most recent call last):
    ...
    SystemExit: run.py: ... was pre-trained with other settings (yaml: 'a' -> 'b'); pass --fresh or another --output
    """
    out = pathlib.Path(out)
    path = out / "run_settings.json"
    if path.is_file():
        old = json.loads(path.read_text(encoding="utf-8"))
        diff = [f"{k}: {old.get(k)!r} -> {settings.get(k)!r}"
                for k in sorted(set(old) | set(settings)) if old.get(k) != settings.get(k)]
        if diff:
            raise SystemExit(f"run.py: {out} was pre-trained with other settings "
                             f"({'; '.join(diff)}); pass --fresh or another --output")
        return
    if any(out.glob("save/CKPT+*")):
        raise SystemExit(f"run.py: {out} holds a pre-training whose settings were not "
                         "recorded; pass --fresh or another --output")
    path.write_text(json.dumps(settings, indent=1, sort_keys=True), encoding="utf-8")


def run_pretraining(runs, pool, yaml, epochs, threads, jobs, extra, fresh=False):
    """Runs (or resumes) the pre-trainings, ``jobs`` at a time; returns wall seconds each.

    Arguments
    ---------
    runs : dict
        ``{name: (output folder, overrides)}``.
    pool : dict
        ``train`` / ``valid`` manifests.
    yaml : str
        Model YAML.
    epochs : int or None
        ``number_of_epochs`` override.
    threads : int
        Torch threads per process.
    jobs : int
        Processes at once.
    extra : dict
        Overrides for every run.
    fresh : bool
        Delete finished runs first.
    """
    import shutil
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    yaml_sha256 = hashlib.sha256(pathlib.Path(yaml).read_bytes()).hexdigest()
    pending = []
    for name, (out, overrides) in runs.items():
        out = pathlib.Path(out)
        if fresh and out.exists():
            shutil.rmtree(out)
        out.mkdir(parents=True, exist_ok=True)
        overrides = {**extra, **overrides}
        check_run_settings(out, {"yaml": pathlib.Path(yaml).name, "yaml_sha256": yaml_sha256,
                                 "epochs": epochs, "overrides": overrides,
                                 "pool": str(pool["train"])})
        pending.append((name, out, pretrain_command(yaml, pool, out, epochs, overrides)))
    times, active = {}, []
    while pending or active:
        while pending and len(active) < max(1, jobs):
            name, out, cmd = pending.pop(0)
            log = open(out / "pretrain_stdout.txt", "a", encoding="utf-8")
            logger.info("pre-training %s -> %s", name, out)
            active.append((name, out, subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT,
                                                       env=env, cwd=str(ROOT)), log,
                           time.time()))
        time.sleep(1.0)
        for item in list(active):
            name, out, proc, log, start = item
            if proc.poll() is None:
                continue
            log.close()
            active.remove(item)
            if proc.returncode != 0:
                tail = (out / "pretrain_stdout.txt").read_text(encoding="utf-8")[-2000:]
                raise RuntimeError(f"pre-training {name} failed (rc {proc.returncode}); "
                                   f"see {out / 'pretrain_stdout.txt'}:\n{tail}")
            times[name] = time.time() - start
    return times


def child_cpu_seconds():
    """CPU seconds (user + system) of finished child processes so far."""
    import resource
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


def read_epochs(out):
    """Rows of a run's ``epochs.jsonl`` (empty when absent)."""
    path = pathlib.Path(out) / "epochs.jsonl"
    if not path.is_file():
        return []
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


# ================================================================ evaluation
def stability_manifest(tasks, out, max_clips):
    """One manifest per task of its first ``max_clips`` test clips (classes interleaved)."""
    import csv
    paths = {}
    for task, entry in tasks.items():
        with open(entry["test"], newline="", encoding="utf-8") as f:
            rows = list(csv.DictReader(f))
        by_class = {}
        for r in rows:
            by_class.setdefault(r["label"], []).append(r)
        picked = []
        while len(picked) < max_clips and any(by_class.values()):
            for k in sorted(by_class):
                if by_class[k] and len(picked) < max_clips:
                    picked.append(by_class[k].pop(0))
        path = pathlib.Path(out) / f"stability_{task}.csv"
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "w", newline="", encoding="utf-8") as f:
            w = csv.DictWriter(f, ["ID", "duration", "wav"])
            w.writeheader()
            for r in picked:
                w.writerow({k: r[k] for k in ("ID", "duration", "wav")})
        paths[task] = str(path)
    return paths


def build_model(spec):
    """A model from its recipe: ``("run" | "teacher", folder)``, ``("random", folder[, seed])``
    or ``("floor", folder)``.

    ``run`` is the pre-trained student, ``teacher`` its EMA teacher.

    The floor takes the front end of the run's model.
    """
    from aasp_sb.inference import load_encoder
    kind, folder = spec[:2]
    if kind in ("run", "teacher"):
        which = "teacher" if kind == "teacher" else "student"
        return load_encoder(str(folder), which=which, device="cpu")
    if kind == "random":
        seed = spec[2] if len(spec) > 2 else 0
        return load_encoder(str(folder), random_init=True, seed=seed, device="cpu")
    if kind == "floor":
        model = load_encoder(str(folder), device="cpu")
        return LogMelStats(model.features, model.encoder.patch_size)
    raise ValueError(f"unknown model kind {kind!r}")


def evaluate_one(name, spec, tasks, out, seeds, stab_csv, shifts, probe_epochs, threads):
    """Probes and stability of one model (runs in a worker process).

    Returns
    -------
    tuple
        ``(name, {task: result}, {task: stability}, cpu seconds)``.
    """
    from aasp_sb.analysis.stability import measure_model_stability
    from aasp_sb.evaluation.linear_eval import csv_task, evaluate_tasks
    torch.set_num_threads(max(1, int(threads)))
    c0 = time.process_time()
    logging.basicConfig(level=logging.INFO, format="%(name)s - %(message)s")
    model = build_model(spec)
    specs = [csv_task(t, e["train"], e["valid"], e["test"], clip_seconds=e["clip_seconds"],
                      classes=e["classes"]) for t, e in tasks.items()]
    probe_kwargs = {"max_epochs": int(probe_epochs)} if probe_epochs else None
    slug = "".join(c if c.isalnum() else "_" for c in name.lower()).strip("_")
    t0 = time.time()
    scores = evaluate_tasks(model, specs, pathlib.Path(out) / "linear_eval" / slug,
                            cache_folder=pathlib.Path(out) / "embeddings", seeds=tuple(seeds),
                            progress=False, probe_kwargs=probe_kwargs)
    t1 = time.time()
    if isinstance(model, LogMelStats):
        features, encoder = model.features, model
    else:
        features, encoder = model.features, model.encoder
    stability = {}
    for task, csv_path in stab_csv.items():
        res = measure_model_stability(features, encoder, csv_path, shifts=shifts,
                                      seconds=tasks[task]["clip_seconds"])
        stability[task] = res["overall"]
    logger.info("%s: probes %.0f s, stability %.0f s (wall)", name, t1 - t0, time.time() - t1)
    slim = {t: {k: r[k] for k in ("mean", "ci95", "per_seed", "metric", "clips")}
            for t, r in scores.items()}
    return name, slim, stability, time.process_time() - c0


def evaluate(specs, tasks, out, seeds, stab_clips, shifts, probe_epochs=None, jobs=2,
             threads=1):
    """Probes and stability of every model, ``jobs`` models at a time (spawned processes).

    Arguments
    ---------
    specs : dict
        ``{name: model spec}`` (see :func:`build_model`), in table order.
    tasks : dict
        The benchmark's tasks (``benchmark.json``).
    out : pathlib.Path
        Output folder.
    seeds : sequence of int
        Probe seeds.
    stab_clips : int
        Test clips per task for the stability measure.
    shifts : list of int
        Shifts in frames.
    probe_epochs : int, optional
        Probe epoch limit.
    jobs, threads : int
        Worker processes and torch threads each.

    Returns
    -------
    tuple
        ``(scores, stability, cpu seconds)`` with ``{model: {task: ...}}`` dicts.
    """
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor
    stab_csv = stability_manifest(tasks, pathlib.Path(out) / "stability", stab_clips)
    args = [(name, spec, tasks, str(out), list(seeds), stab_csv, shifts, probe_epochs, threads)
            for name, spec in specs.items()]
    results = {}
    if jobs <= 1:
        for a in args:
            results[a[0]] = evaluate_one(*a)
    else:
        with ProcessPoolExecutor(jobs, mp_context=mp.get_context("spawn")) as ex:
            for res in ex.map(evaluate_one, *zip(*args)):
                results[res[0]] = res
    scores = {name: results[name][1] for name in specs}
    stability = {name: results[name][2] for name in specs}
    return scores, stability, sum(r[3] for r in results.values())


def table(scores, stability, tasks):
    """The Markdown results table (accuracy in %, mean ± 95 % CI over probe seeds).

    Example
    -------
    >>> s = {"m": {"a": {"mean": 0.5, "ci95": 0.1, "per_seed": [0.4, 0.5, 0.6]},
    ...            "b": {"mean": 0.7, "ci95": 0.1, "per_seed": [0.6, 0.7, 0.8]}}}
    >>> print(table(s, {"m": {"a": 0.9, "b": 0.7}}, ["a", "b"]).splitlines()[2])
    | m | 50.00 ± 10.00 | 70.00 ± 10.00 | 60.00 ± 24.84 | 0.800 |
    """
    from aasp_sb.evaluation.metrics import format_mean_ci, mean_ci95
    tasks = list(tasks)
    head = ("| embedding | " + " | ".join(tasks) + " | mean over tasks | "
            "shift stability (centred cos, 1-15 frames) |")
    lines = [head, "|---" * (len(tasks) + 3) + "|"]
    for name, res in scores.items():
        cells = [format_mean_ci(res[t]["mean"], res[t]["ci95"]) for t in tasks]
        per_seed = [sum(res[t]["per_seed"][i] for t in tasks) / len(tasks)
                    for i in range(len(res[tasks[0]]["per_seed"]))]
        m, hw = mean_ci95(per_seed)
        st = stability.get(name, {})
        stab = sum(st[t] for t in tasks) / len(tasks) if st else float("nan")
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {format_mean_ci(m, hw)} | "
                     f"{stab:.3f} |")
    return "\n".join(lines)


def seed_runs(out, n_seeds):
    """The pre-training runs: ``{(stem, index): (folder, overrides)}`` for ``n_seeds`` seeds.

    Seed index 0 is the YAML's own seed (folders ``pretrain_aape`` /
    ``pretrain_plain``); index ``i >= 1`` overrides ``seed=i`` (folders
    ``pretrain_aape_seed<i>``).

    Example
    -------
    >>> r = seed_runs(pathlib.Path("o"), 2)
    >>> sorted((k, v[0].name, v[1].get("seed")) for k, v in r.items())
    [(('aape', 0), 'pretrain_aape', None), (('aape', 1), 'pretrain_aape_seed1', 1), (('plain', 0), 'pretrain_plain', None), (('plain', 1), 'pretrain_plain_seed1', 1)]
    """
    runs = {}
    for i in range(max(1, int(n_seeds))):
        for stem, use_aape in (("aape", True), ("plain", False)):
            overrides = {"use_aape": use_aape}
            if i:
                overrides["seed"] = i
            runs[(stem, i)] = (out / (f"pretrain_{stem}" + (f"_seed{i}" if i else "")), overrides)
    return runs


def run_seed(folder):
    """The ``seed`` a finished pre-training ran with (from its ``hyperparams.yaml``).

    The random-init rows are built with it, so each is the very model its
    pre-training started from (a paired comparison).
    """
    import re
    path = pathlib.Path(folder) / "hyperparams.yaml"
    m = re.search(r"^seed: *(\d+)\s*$", path.read_text(encoding="utf-8"), re.M)
    if not m:
        raise SystemExit(f"run.py: no top-level 'seed:' in {path}")
    return int(m.group(1))


def paired_gain(flat_scores, tasks, pre, rand, n_seeds):
    """Per seed: mean over tasks of ``pre`` minus that of ``rand`` (same seed, same init).

    Example
    -------
    >>> f = {"p #0": {"t": {"per_seed": [0.6, 0.8]}}, "r #0": {"t": {"per_seed": [0.5, 0.5]}}}
    >>> [round(v, 3) for v in paired_gain(f, ["t"], "p", "r", 1)]
    [0.2]
    """
    def mean(key):
        res = flat_scores[key]
        return sum(sum(res[t]["per_seed"]) / len(res[t]["per_seed"]) for t in tasks) / len(tasks)
    return [mean(f"{pre} #{i}") - mean(f"{rand} #{i}") for i in range(n_seeds)]


def pool_over_seeds(per_model_seed):
    """Merges per-seed results into one result per task, seeds as the CI's unit.

    Arguments
    ---------
    per_model_seed : list of dict
        One ``{task: {"mean", "ci95", "per_seed", ...}}`` per model seed (its
        ``per_seed`` are probe seeds).

    Returns
    -------
    dict
        ``{task: result}``; with one model seed it is returned unchanged (CI
        over probe seeds); with several, ``per_seed`` holds one value per
        model seed (its mean over the probe seeds) and the mean and CI are
        taken over those.

    Example
    -------
    >>> a = {"t": {"mean": 0.5, "ci95": 0.1, "per_seed": [0.4, 0.6]}}
    >>> b = {"t": {"mean": 0.7, "ci95": 0.1, "per_seed": [0.7, 0.7]}}
    >>> r = pool_over_seeds([a, b])["t"]
    >>> [round(v, 3) for v in r["per_seed"]], round(r["mean"], 3)
    ([0.5, 0.7], 0.6)
    """
    from aasp_sb.evaluation.metrics import mean_ci95
    if len(per_model_seed) == 1:
        return per_model_seed[0]
    merged = {}
    for task in per_model_seed[0]:
        means = [sum(r[task]["per_seed"]) / len(r[task]["per_seed"]) for r in per_model_seed]
        m, hw = mean_ci95(means)
        merged[task] = {**per_model_seed[0][task], "mean": m, "ci95": hw, "per_seed": means,
                        "per_model_seed": [r[task]["per_seed"] for r in per_model_seed]}
    return merged


def pool_minutes(pool):
    """Minutes of audio in the pool's train manifest."""
    import csv
    with open(pool["train"], newline="", encoding="utf-8") as f:
        return sum(float(r["duration"]) for r in csv.DictReader(f)) / 60.0


def main(argv=None):
    """Runs the benchmark and prints its table."""
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--build", action="store_true", help="gather / assemble the data first")
    p.add_argument("--apt", action="store_true", help="with --build: apt-get install the "
                   "missing packages (root)")
    p.add_argument("--cache", default=rab.DEFAULT_CACHE, help="data cache folder")
    p.add_argument("--manifests", default=None,
                   help="use this assembled folder (benchmark.json) instead of the cache's")
    p.add_argument("--output", default=str(ROOT / "results" / "real_audio"))
    p.add_argument("--hparams", default=str(DEFAULT_YAML), help="model YAML")
    p.add_argument("--epochs", type=int, default=None, help="pre-training epochs (YAML's "
                   "when not given)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="YAML override for both pre-trainings (repeatable)")
    p.add_argument("--seeds", type=int, default=3, help="probe seeds")
    p.add_argument("--pretrain_seeds", type=int, default=1,
                   help="pre-training (and random-init) seeds per stem; with more than one "
                   "the CIs are over these seeds, each averaged over the probe seeds")
    p.add_argument("--threads", type=int, default=1, help="torch threads per process")
    p.add_argument("--jobs", type=int, default=2, help="pre-trainings at once")
    p.add_argument("--probe_epochs", type=int, default=None,
                   help="linear-probe epoch limit (EVAR's 200 when not given)")
    p.add_argument("--stability_clips", type=int, default=48, help="test clips per task")
    p.add_argument("--fresh", action="store_true", help="redo the pre-training")
    p.add_argument("--skip_random_plain", action="store_true",
                   help="leave out the plain-stem random-init row")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(name)s - %(message)s")
    start = time.time()
    out = pathlib.Path(args.output).resolve()
    out.mkdir(parents=True, exist_ok=True)
    if args.build:
        try:
            bench = rab.build(args.cache, apt=args.apt)
        except rab.BuildError as err:
            sys.exit(f"run.py: build failed: {err}")
    else:
        folder = (pathlib.Path(args.manifests) if args.manifests
                  else pathlib.Path(args.cache).expanduser() / "manifests")
        if not (folder / "benchmark.json").is_file():
            sys.exit(f"run.py: no built benchmark in {folder} (run with --build first)")
        bench = json.loads((folder / "benchmark.json").read_text(encoding="utf-8"))
    t_build = time.time() - start
    extra = dict(kv.split("=", 1) for kv in args.set)
    bad = [kv for kv in args.set if "=" not in kv]
    if bad:
        sys.exit(f"run.py: --set needs KEY=VALUE, got {bad[0]!r}")

    from aasp_sb.evaluation.metrics import mean_ci95
    torch.set_num_threads(max(1, args.threads))
    n_seeds = max(1, args.pretrain_seeds)
    runs = seed_runs(out, n_seeds)
    t0, c0 = time.time(), child_cpu_seconds()
    run_pretraining({f"{stem} seed {i}": v for (stem, i), v in runs.items()}, bench["pool"],
                    args.hparams, args.epochs, args.threads, args.jobs, extra, fresh=args.fresh)
    t_pretrain, cpu_pretrain = time.time() - t0, child_cpu_seconds() - c0

    # one model per (row, seed); the floor has no seed
    seeded = {}
    for i in range(n_seeds):
        aape, plain = runs[("aape", i)][0], runs[("plain", i)][0]
        seeded[("AaPE, pre-trained", i)] = ("run", aape)
        seeded[("plain stem, pre-trained", i)] = ("run", plain)
        seeded[("AaPE, random init", i)] = ("random", aape, run_seed(aape))
        if not args.skip_random_plain:
            seeded[("plain stem, random init", i)] = ("random", plain, run_seed(plain))
    seeded[("log-mel mean/std", 0)] = ("floor", runs[("aape", 0)][0])
    specs = {f"{name} #{i}": spec for (name, i), spec in seeded.items()}
    t0 = time.time()
    flat_scores, flat_stab, cpu_eval = evaluate(
        specs, bench["tasks"], out, range(args.seeds), args.stability_clips,
        list(range(1, 16)), probe_epochs=args.probe_epochs, jobs=args.jobs,
        threads=args.threads)
    t_eval = time.time() - t0
    scores, stability = {}, {}
    for name in dict.fromkeys(n for n, _ in seeded):
        keys = [f"{name} #{i}" for n, i in seeded if n == name]
        scores[name] = pool_over_seeds([flat_scores[k] for k in keys])
        stability[name] = {t: sum(flat_stab[k][t] for k in keys) / len(keys)
                           for t in flat_stab[keys[0]]}

    paired = {}
    for stem in ("AaPE", "plain stem"):
        if (f"{stem}, random init", 0) in seeded:
            paired[stem] = paired_gain(flat_scores, list(bench["tasks"]), f"{stem}, pre-trained",
                                       f"{stem}, random init", n_seeds)
    curves = {"AaPE, pre-trained": read_epochs(runs[("aape", 0)][0]),
              "plain stem, pre-trained": read_epochs(runs[("plain", 0)][0])}
    counts = bench["counts"]
    lines = [
        "# Real-recordings benchmark",
        "",
        f"Pool: {counts['pool']['pool']} clips, {pool_minutes(bench['pool']):.1f} min; "
        f"model {pathlib.Path(args.hparams).name}"
        + (f" ({', '.join(args.set)})" if args.set else "")
        + f", {len(curves['AaPE, pre-trained'])} epochs; probes: EVAR linear probe, "
        f"{args.seeds} seeds, accuracy (%) mean ± 95 % CI over "
        + (f"{n_seeds} pre-training / random-init seeds (each the mean of the probe seeds; "
           "the log-mel row: over probe seeds)." if n_seeds > 1 else "probe seeds."),
        "Tasks (train/valid/test clips, source-disjoint): " + "; ".join(
            f"{t} {c['train']}/{c['valid']}/{c['test']}" for t, c in sorted(counts.items())
            if t != "pool"),
        "",
        table(scores, stability, list(bench["tasks"])),
        "",
        "Pre-trained minus its own starting point (random init with the pre-training's seed), "
        "mean over tasks, per seed: " + "; ".join(
            f"{stem} {100 * sum(g) / len(g):+.2f}"
            + (f" ± {100 * mean_ci95(g)[1]:.2f}" if len(g) > 1 else "")
            + " (" + ", ".join(f"{100 * v:+.2f}" for v in g) + ")"
            for stem, g in paired.items()) + ".",
        "Pre-training, last epoch: " + "; ".join(
            f"{n}: valid reg. {c[-1].get('valid_regression', float('nan')):.3f}, RankMe "
            f"{c[-1].get('valid_rankme', float('nan')):.1f}" for n, c in curves.items() if c),
        f"Wall time: build/load {t_build / 60:.1f} min, pre-training {t_pretrain / 60:.1f} min, "
        f"evaluation {t_eval / 60:.1f} min, total {(time.time() - start) / 60:.1f} min; "
        f"CPU time: pre-training {cpu_pretrain / 60:.1f} min ({len(runs)} runs), evaluation "
        f"{cpu_eval / 60:.1f} min.",
    ]
    report = "\n".join(lines) + "\n"
    (out / "RESULTS.md").write_text(report, encoding="utf-8")
    with open(out / "results.json", "w", encoding="utf-8") as f:
        json.dump({"scores": scores, "hparams": str(args.hparams), "set": args.set,
                   "pretrain_seeds": n_seeds, "per_model": flat_scores, "paired_gain": paired,
                   "models": {k: [str(v) for v in spec] for k, spec in specs.items()},
                   "stability": stability, "curves": curves,
                   "times": {"build": t_build, "pretrain": t_pretrain, "eval": t_eval,
                             "cpu_pretrain": cpu_pretrain, "cpu_eval": cpu_eval}},
                  f, indent=1)
    print("\n" + report)
    return scores, stability


if __name__ == "__main__":
    main(sys.argv[1:])
