"""Linear evaluation of a frozen encoder on downstream tasks: the EVAR protocol end to end.

For each task (DESIGN.md section 5):

1. data preparation: a registered task's ``prepare(data_folder, save_folder)``
   (:mod:`aasp_sb.data.tasks`), or a *CSV task* whose train/valid/test
   manifests are given directly (e.g. :func:`aasp_sb.data.demo.make_demo_corpus`);
2. embeddings: every clip cropped / zero-padded to the task's
   ``clip_seconds`` -- a random crop for train and valid (seeded per clip,
   so a clip gets the same crop in every fold), the start for test -- and
   mean-pooled frame features of the frozen encoder
   (:func:`aasp_sb.embed.embed_clips`). Embeddings are cached as ``.npy``
   under ``cache_folder/<model hash>/<task>/`` keyed by the model's weights,
   the clips and every embedding option, so re-runs skip the encoder;
3. :func:`~aasp_sb.evaluation.linear_probe.run_linear_eval`: scaler fitted
   on train, one Linear layer, early stopping on validation, folds averaged,
   mean ± 95% CI over three seeds (mAP for multi-label tasks);
4. a results table (Markdown, CSV, JSON) in ``output_folder``.

**Short clips.** With ``mask_padding=False`` (default, as EVAR) the zeros
that pad a short clip are part of the encoder's input; with ``True`` the
encoder gets the clip's true length and pools over its real frames only.

Unreadable clips are logged, listed in the task's result (``skipped``) and
left out of their split.
"""

import hashlib
import json
import logging
import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import List, Optional

import numpy as np
import torch

from aasp_sb.data.audio import SkipCounter
from aasp_sb.data.tasks import Split, TaskInfo, get_task
from aasp_sb.embed import embed_clips, read_manifest
from aasp_sb.evaluation.linear_probe import run_linear_eval, write_results

logger = logging.getLogger(__name__)

#: Bump when cached embeddings computed with the same options would change.
CACHE_VERSION = 1
#: Data-folder keys of the registered tasks in the recipe YAML.
FOLDER_KEY = "{name}_folder"


@dataclass
class TaskSpec:
    """What to evaluate: a registered dataset, or CSV manifests given directly.

    Arguments
    ---------
    name : str
        Task name (a registered name when ``data_folder`` is set).
    data_folder : str, optional
        Dataset folder in its official layout (registered tasks).
    prepare_kwargs : dict
        Extra options of the task's ``prepare`` (e.g. GTZAN ``split_folder``).
    splits : list of Split, optional
        CSV task: the train/valid/test manifests (one entry per fold).
    clip_seconds : float, optional
        CSV task: crop length (overrides a registered task's own).
    classes : str or list, optional
        CSV task: ``classes.txt`` path or class names (default: a
        ``classes.txt`` next to the first train CSV, else the sorted labels
        of the train CSVs).
    multilabel : bool
        CSV task: labels joined by ``;`` and scored with mAP.

    Example
    -------
    >>> spec = csv_task("demo", "tr.csv", "va.csv", "te.csv", clip_seconds=2.0)
    >>> spec.is_csv, spec.splits[0].name
    (True, 'official')
    """

    name: str
    data_folder: Optional[str] = None
    prepare_kwargs: dict = field(default_factory=dict)
    splits: Optional[List[Split]] = None
    clip_seconds: Optional[float] = None
    classes: object = None
    multilabel: bool = False

    @property
    def is_csv(self):
        """True for a CSV task (manifests given, no preparation)."""
        return self.splits is not None


def csv_task(
    name, train_csv, valid_csv, test_csv, clip_seconds, classes=None,
    multilabel=False,
):
    """A :class:`TaskSpec` for one train/valid/test set of CSV manifests.

    Arguments
    ---------
    name : str
        Task name (used in tables and cache paths).
    train_csv, valid_csv, test_csv : str
        Manifests (``ID,duration,wav,label``).
    clip_seconds : float
        Crop / pad length.
    classes : str or list, optional
        ``classes.txt`` path or class names.
    multilabel : bool
        Multi-label task (mAP).

    Returns
    -------
    TaskSpec
    """
    split = Split("official", str(train_csv), str(valid_csv), str(test_csv))
    return TaskSpec(
        name=name, splits=[split], clip_seconds=float(clip_seconds),
        classes=classes, multilabel=bool(multilabel),
    )


def as_task_spec(name, spec):
    """Normalises a task description to a :class:`TaskSpec`.

    Arguments
    ---------
    name : str
        Task name.
    spec : str or dict or TaskSpec
        A data folder (registered task); a dict with ``data_folder`` (and
        optional ``prepare_kwargs``, ``clip_seconds``); a dict with
        ``train_csv``/``valid_csv``/``test_csv`` and ``clip_seconds`` (and
        optional ``classes``, ``multilabel``); or a dict with ``splits``
        (list of dicts with ``name`` and the three CSVs) for folds.

    Returns
    -------
    TaskSpec

    Example
    -------
    >>> as_task_spec("esc50", "/data/ESC-50").data_folder
    '/data/ESC-50'
    >>> as_task_spec("toy", {"train_csv": "a", "valid_csv": "b",
    ...                      "test_csv": "c", "clip_seconds": 1}).is_csv
    True
    """
    if isinstance(spec, TaskSpec):
        return spec
    if isinstance(spec, (str, os.PathLike)):
        return TaskSpec(name=name, data_folder=str(spec))
    if not isinstance(spec, dict):
        raise TypeError(f"task {name!r}: cannot read a task from {spec!r}")
    spec = dict(spec)
    if "data_folder" in spec:
        return TaskSpec(
            name=name,
            data_folder=str(spec["data_folder"]),
            prepare_kwargs=dict(spec.get("prepare_kwargs") or {}),
            clip_seconds=spec.get("clip_seconds"),
        )
    if "clip_seconds" not in spec or spec["clip_seconds"] is None:
        raise ValueError(f"CSV task {name!r}: `clip_seconds` is required")
    if "splits" in spec:
        splits = [
            Split(
                str(s.get("name", f"fold{i + 1}")), str(s["train_csv"]),
                str(s["valid_csv"]), str(s["test_csv"]),
            )
            for i, s in enumerate(spec["splits"])
        ]
    else:
        missing = [k for k in ("train_csv", "valid_csv", "test_csv") if not spec.get(k)]
        if missing:
            raise ValueError(f"CSV task {name!r}: missing {', '.join(missing)}")
        splits = [
            Split("official", str(spec["train_csv"]), str(spec["valid_csv"]),
                  str(spec["test_csv"]))
        ]
    return TaskSpec(
        name=name,
        splits=splits,
        clip_seconds=float(spec["clip_seconds"]),
        classes=spec.get("classes"),
        multilabel=bool(spec.get("multilabel", False)),
    )


def read_classes(path):
    r"""Class names of a ``classes.txt`` (one per line, blank lines ignored).

    Example
    -------
    >>> p = getfixture("tmp_path") / "classes.txt"
    >>> _ = p.write_text("dog\ncat\n")
    >>> read_classes(p)
    ['dog', 'cat']
    """
    with open(path, encoding="utf-8") as f:
        return [line.strip() for line in f if line.strip()]


def split_labels(label, multilabel):
    """Class names of a ``label`` field.

    Example
    -------
    >>> split_labels("a;b", True), split_labels("a;b", False)
    (['a', 'b'], ['a;b'])
    """
    if multilabel:
        return [x.strip() for x in label.split(";") if x.strip()]
    return [label.strip()]


def prepare(spec, save_folder, seed=0):
    """Runs a task's preparation (or reads a CSV task's manifests).

    Arguments
    ---------
    spec : TaskSpec
        The task.
    save_folder : str or Path
        Parent folder of the prepared manifests (``save_folder/<task>``).
    seed : int
        Seed of derived validation splits.

    Returns
    -------
    info : TaskInfo
    splits : list of Split
    classes : list of str
    """
    if not spec.is_csv:
        if not spec.data_folder:
            raise ValueError(f"task {spec.name!r}: no data folder given")
        module = get_task(spec.name)
        folder = Path(save_folder) / module.info.name
        info, splits = module.prepare(
            spec.data_folder, folder, seed=seed, **spec.prepare_kwargs
        )
        classes = read_classes(folder / "classes.txt")
        if spec.clip_seconds:
            info = replace(info, clip_seconds=float(spec.clip_seconds))
        return info, list(splits), classes
    for split in spec.splits:
        for path in (split.train_csv, split.valid_csv, split.test_csv):
            if not os.path.isfile(path):
                raise FileNotFoundError(f"task {spec.name!r}: manifest {path} not found")
    classes = spec.classes
    if isinstance(classes, (str, os.PathLike)):
        classes = read_classes(classes)
    elif classes is None:
        default = Path(spec.splits[0].train_csv).parent / "classes.txt"
        if default.is_file():
            classes = read_classes(default)
        else:
            names = set()
            for split in spec.splits:
                for row in read_manifest(split.train_csv):
                    names.update(split_labels(row.get("label", ""), spec.multilabel))
            classes = sorted(n for n in names if n)
    classes = list(classes)
    info = TaskInfo(
        name=spec.name,
        num_classes=len(classes),
        multilabel=spec.multilabel,
        metric="mAP" if spec.multilabel else "accuracy",
        clip_seconds=float(spec.clip_seconds),
        sample_rate=16000,
        folds=[s.name for s in spec.splits] if len(spec.splits) > 1 else None,
    )
    return info, list(spec.splits), classes


def encode_labels(rows, classes, multilabel, source):
    """Targets of manifest rows: class indices ``[N]`` or multi-hot ``[N, C]``.

    Arguments
    ---------
    rows : list of dict
        Manifest rows (``label`` column).
    classes : list of str
        Class names in index order.
    multilabel : bool
        Multi-hot targets.
    source : str
        Manifest path (for errors).

    Returns
    -------
    torch.Tensor

    Example
    -------
    >>> encode_labels([{"label": "b"}], ["a", "b"], False, "x.csv").tolist()
    [1]
    >>> encode_labels([{"label": "a;b"}], ["a", "b"], True, "x.csv").tolist()
    [[1.0, 1.0]]
    """
    index = {c: i for i, c in enumerate(classes)}
    out = torch.zeros(len(rows), len(classes)) if multilabel else torch.zeros(
        len(rows), dtype=torch.long
    )
    for r, row in enumerate(rows):
        names = split_labels(row.get("label", ""), multilabel)
        unknown = [n for n in names if n not in index]
        if unknown or not names or not names[0]:
            raise ValueError(
                f"{source}: clip {row.get('ID')} has label(s) {unknown or names} "
                f"not in the {len(classes)} classes"
            )
        if multilabel:
            for n in names:
                out[r, index[n]] = 1.0
        else:
            out[r] = index[names[0]]
    return out


def _digest(obj):
    return hashlib.sha1(json.dumps(obj, sort_keys=True).encode()).hexdigest()


def cached_embeddings(model, clips, mode, clip_seconds, cache_dir, options, progress=True, desc=""):
    """Embeddings of ``clips`` (list of ``(ID, wav)``), from the cache when possible.

    Arguments
    ---------
    model : aasp_sb.inference.AaSPEncoder
        The encoder.
    clips : list of tuple
        ``(ID, wav path)`` pairs.
    mode : str
        ``"random"`` or ``"start"`` crop.
    clip_seconds : float
        Crop / pad length.
    cache_dir : str or Path or None
        Cache folder (None: no caching).
    options : dict
        ``batch_size``, ``num_workers``, ``layer``, ``pooling``,
        ``mask_padding``, ``crop_seed``.
    progress : bool
        Progress bar.
    desc : str
        Label for messages.

    Returns
    -------
    embeddings : numpy.ndarray
        ``[len(clips), D]`` (NaN rows for unreadable clips).
    skipped : list of str
        Paths of unreadable clips.
    """
    key = {
        "version": CACHE_VERSION,
        "clips": _digest([list(c) for c in clips]),
        "mode": mode,
        "clip_seconds": float(clip_seconds),
        "crop_seed": int(options["crop_seed"]),
        "layer": options["layer"],
        "pooling": options["pooling"],
        "mask_padding": bool(options["mask_padding"]),
        "sample_rate": model.sample_rate,
    }
    path = None
    if cache_dir is not None:
        path = Path(cache_dir) / f"{mode}-{_digest(key)[:16]}.npy"
        meta = path.with_suffix(".json")
        if path.is_file() and meta.is_file():
            try:
                record = json.loads(meta.read_text(encoding="utf-8"))
                emb = np.load(path)
                if record.get("key") == key and emb.shape[0] == len(clips):
                    logger.info("%s: %s embeddings from cache %s", desc, mode, path)
                    return emb, record.get("skipped", [])
            except (OSError, ValueError) as err:
                logger.warning("ignoring unreadable cache %s (%s)", path, err)
    counter = SkipCounter(desc)
    emb, skipped = embed_clips(
        model,
        [c[1] for c in clips],
        keys=[c[0] for c in clips],
        batch_size=options["batch_size"],
        num_workers=options["num_workers"],
        layer=options["layer"],
        pooling=options["pooling"],
        clip_seconds=clip_seconds,
        crop=mode,
        crop_seed=options["crop_seed"],
        mask_padding=options["mask_padding"],
        progress=progress,
        desc=f"{desc} ({mode} crops)",
        skip_counter=counter,
    )
    skipped_paths = [p for _, (p, _) in sorted(skipped.items())]
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.stem}.tmp.npy")
        np.save(tmp, emb)
        os.replace(tmp, path)
        record = {"key": key, "clips": [list(c) for c in clips], "skipped": skipped_paths}
        meta = path.with_suffix(".json")
        tmp_meta = meta.with_name(f".{meta.name}.tmp")
        tmp_meta.write_text(json.dumps(record), encoding="utf-8")
        os.replace(tmp_meta, meta)
    return emb, skipped_paths


def evaluate_task(
    model,
    spec,
    save_folder,
    cache_folder=None,
    seeds=(0, 1, 2),
    prep_seed=0,
    crop_seed=0,
    batch_size=16,
    num_workers=0,
    layer=-1,
    pooling="mean",
    mask_padding=False,
    probe_kwargs=None,
    progress=True,
):
    """Prepares, embeds and linearly evaluates one task.

    Arguments
    ---------
    model : aasp_sb.inference.AaSPEncoder
        The frozen encoder.
    spec : TaskSpec
        The task.
    save_folder : str or Path
        Where task preparation writes its manifests.
    cache_folder : str or Path, optional
        Embedding cache root (None: no caching).
    seeds : sequence of int
        Probe seeds.
    prep_seed : int
        Seed of derived validation splits.
    crop_seed : int
        Seed of the random train / valid crops.
    batch_size, num_workers : int
        Embedding batch size and audio-reading workers.
    layer : int or list of int
        Encoder layer(s).
    pooling : str
        ``"mean"`` or ``"mean+max"``.
    mask_padding : bool
        Hide the zero padding of short clips from the encoder.
    probe_kwargs : dict, optional
        Passed to :func:`~aasp_sb.evaluation.linear_probe.train_linear_probe`
        (``lr``, ``max_epochs``, ``patience``, ``batch_size``, ``device``...).
    progress : bool
        Progress bars.

    Returns
    -------
    dict
        :func:`~aasp_sb.evaluation.linear_probe.run_linear_eval`'s result
        plus ``task``, ``num_classes``, ``clip_seconds``, ``clips`` (per
        split counts) and ``skipped`` (unreadable clips).
    """
    info, splits, classes = prepare(spec, save_folder, prep_seed)
    logger.info(
        "%s: %d classes, %d split(s), %.2f s clips", spec.name, len(classes),
        len(splits), info.clip_seconds,
    )
    manifests = {}
    for split in splits:
        for part, path in (("train", split.train_csv), ("valid", split.valid_csv),
                           ("test", split.test_csv)):
            manifests[(split.name, part)] = (path, read_manifest(path))
    by_mode = {"random": {}, "start": {}}
    for (_, part), (_, rows) in manifests.items():
        mode = "start" if part == "test" else "random"
        for row in rows:
            by_mode[mode].setdefault((row["ID"], row["wav"]), None)
    options = {
        "batch_size": batch_size, "num_workers": num_workers, "layer": layer,
        "pooling": pooling, "mask_padding": mask_padding, "crop_seed": crop_seed,
    }
    cache_dir = None
    if cache_folder is not None:
        cache_dir = Path(cache_folder) / model.model_fingerprint()[:16] / spec.name
    table, skipped = {}, []
    for mode, clips in by_mode.items():
        clips = list(clips)
        if not clips:
            continue
        emb, bad = cached_embeddings(
            model, clips, mode, info.clip_seconds, cache_dir, options,
            progress, desc=spec.name,
        )
        skipped += [p for p in bad if p not in skipped]
        table[mode] = {clip: emb[i] for i, clip in enumerate(clips)}
    eval_splits = []
    counts = {}
    for split in splits:
        entry = {"name": split.name}
        counts[split.name] = {}
        for part in ("train", "valid", "test"):
            path, rows = manifests[(split.name, part)]
            mode = "start" if part == "test" else "random"
            x = np.stack([table[mode][(r["ID"], r["wav"])] for r in rows]) if rows else None
            if x is None:
                raise ValueError(f"{spec.name}: {path} has no clips")
            keep = ~np.isnan(x).any(axis=1)
            if not keep.any():
                raise ValueError(f"{spec.name}: no readable clip in {path}")
            rows = [r for r, k in zip(rows, keep) if k]
            y = encode_labels(rows, classes, info.multilabel, path)
            entry[part] = (torch.from_numpy(x[keep]), y)
            counts[split.name][part] = len(rows)
        eval_splits.append(entry)
    probe_kwargs = dict(probe_kwargs or {})
    probe_kwargs.setdefault("device", str(model.device))
    result = run_linear_eval(
        eval_splits, seeds=seeds, multilabel=info.multilabel,
        num_classes=len(classes), **probe_kwargs,
    )
    result.update(
        {
            "task": spec.name,
            "num_classes": len(classes),
            "clip_seconds": info.clip_seconds,
            "clips": counts,
            "skipped": skipped,
        }
    )
    logger.info(
        "%s: %s %.2f ± %.2f (%d fold(s), %d seeds)", spec.name, result["metric"],
        100 * result["mean"], 100 * result["ci95"], len(result["folds"]), len(seeds),
    )
    return result


def evaluate_tasks(
    model,
    tasks,
    output_folder,
    save_folder=None,
    cache_folder=None,
    seeds=(0, 1, 2),
    prep_seed=0,
    crop_seed=0,
    batch_size=16,
    num_workers=0,
    layer=-1,
    pooling="mean",
    mask_padding=False,
    probe_kwargs=None,
    progress=True,
    results_name="results",
):
    """Linear evaluation (EVAR protocol) of one encoder on several tasks.

    Arguments
    ---------
    model : aasp_sb.inference.AaSPEncoder
        The frozen encoder (e.g. :func:`aasp_sb.inference.load_encoder`).
    tasks : dict or list
        ``{name: spec}`` (see :func:`as_task_spec`: a data folder for a
        registered task, or a CSV-task dict) or a list of :class:`TaskSpec`.
    output_folder : str or Path
        Where ``<results_name>.md``, ``.csv`` and ``.json`` are written.
    save_folder : str or Path, optional
        Task preparation outputs (default ``output_folder/data``).
    cache_folder : str or Path, optional
        Embedding cache (default ``output_folder/embeddings``; ``False``
        disables caching).
    seeds, prep_seed, crop_seed, batch_size, num_workers, layer, pooling,
    mask_padding, probe_kwargs, progress
        See :func:`evaluate_task`.
    results_name : str
        Base name of the result files.

    Returns
    -------
    dict
        ``{task: result}`` (see :func:`evaluate_task`); the tables are in
        ``output_folder``.

    Example
    -------
    >>> evaluate_tasks(None, {}, "unused")
    Traceback (most recent call last):
    ...
    ValueError: evaluate_tasks: no tasks given
    """
    if isinstance(tasks, dict):
        specs = [as_task_spec(name, spec) for name, spec in tasks.items()]
    else:
        specs = [as_task_spec(getattr(s, "name", str(s)), s) for s in tasks]
    if not specs:
        raise ValueError("evaluate_tasks: no tasks given")
    output_folder = Path(output_folder)
    save_folder = Path(save_folder) if save_folder else output_folder / "data"
    if cache_folder is None:
        cache_folder = output_folder / "embeddings"
    elif cache_folder is False:
        cache_folder = None
    results = {}
    for spec in specs:
        results[spec.name] = evaluate_task(
            model, spec, save_folder, cache_folder, seeds=seeds,
            prep_seed=prep_seed, crop_seed=crop_seed, batch_size=batch_size,
            num_workers=num_workers, layer=layer, pooling=pooling,
            mask_padding=mask_padding, probe_kwargs=probe_kwargs,
            progress=progress,
        )
        write_all(results, output_folder, results_name)  # partial results survive
    return results


def write_all(results, output_folder, results_name="results"):
    """Writes ``results`` as Markdown, CSV and JSON; returns the paths.

    Arguments
    ---------
    results : dict
        ``{task: result}``.
    output_folder : str or Path
        Output folder.
    results_name : str
        Base name of the files.

    Returns
    -------
    dict
        ``{"markdown", "csv", "json"}`` paths.
    """
    base = Path(output_folder) / results_name
    return {
        "markdown": write_results(results, f"{base}.md"),
        "csv": write_results(results, f"{base}.csv"),
        "json": write_results(results, f"{base}.json"),
    }


def parse_task_list(tasks):
    """``"esc50, us8k"`` or a list -> list of names (empty entries dropped).

    Example
    -------
    >>> parse_task_list("esc50,us8k"), parse_task_list(["gtzan"])
    (['esc50', 'us8k'], ['gtzan'])
    """
    if tasks is None:
        return []
    if isinstance(tasks, str):
        tasks = tasks.split(",")
    return [str(t).strip() for t in tasks if str(t).strip()]


def tasks_from_hparams(hparams):
    """Task specs of the recipe YAML (``tasks``, ``<task>_folder``, ``csv_tasks``).

    A name listed in ``tasks`` is a CSV task when it is a key of
    ``csv_tasks``, else a registered task whose data folder is the
    ``<name>_folder`` key (``prepare_options: {<name>: {...}}`` adds options
    of its ``prepare``). Every missing folder is reported in one error.

    Arguments
    ---------
    hparams : dict
        Loaded recipe hyper-parameters.

    Returns
    -------
    dict
        ``{name: TaskSpec}``.

    Example
    -------
    >>> specs = tasks_from_hparams({"tasks": "esc50", "esc50_folder": "/d"})
    >>> specs["esc50"].data_folder
    '/d'
    >>> tasks_from_hparams({"tasks": "esc50,us8k", "esc50_folder": "/d"})
    Traceback (most recent call last):
    ...
    ValueError: no data folder for: us8k (set --us8k_folder=...)
    """
    names = parse_task_list(hparams.get("tasks"))
    if not names:
        raise ValueError("no tasks selected (set --tasks=esc50,us8k,...)")
    csv_tasks = hparams.get("csv_tasks") or {}
    options = hparams.get("prepare_options") or {}
    specs, missing = {}, []
    for name in names:
        if name in csv_tasks:
            specs[name] = as_task_spec(name, csv_tasks[name])
            continue
        try:
            canonical = get_task(name).info.name
        except KeyError as err:
            raise ValueError(
                f"{err.args[0]}; or define {name!r} under `csv_tasks`"
            ) from None
        folder = hparams.get(FOLDER_KEY.format(name=canonical))
        if not folder:
            missing.append(canonical)
            continue
        specs[canonical] = TaskSpec(
            name=canonical,
            data_folder=str(folder),
            prepare_kwargs=dict(options.get(canonical) or {}),
        )
    if missing:
        flags = " ".join(f"--{m}_folder=..." for m in missing)
        raise ValueError(f"no data folder for: {', '.join(missing)} (set {flags})")
    return specs
