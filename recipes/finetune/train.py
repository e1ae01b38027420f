#!/usr/bin/env python3
"""Recipe: fine-tuning a pre-trained AaSP encoder on a downstream task.

Usage::

    python recipes/finetune/train.py hparams/finetune/esc50.yaml \
        --data_folder=/data/ESC-50 --pretrained_path=results/aasp_base/1986
    python recipes/finetune/train.py hparams/finetune/esc50.yaml \
        --data_folder=/data/ESC-50 --pretrained_path=... --folds=fold1,fold2
    # random-init baseline with the same architecture as a pre-training run:
    python recipes/finetune/train.py hparams/finetune/esc50.yaml \
        --data_folder=/data/ESC-50 --model_hparams=results/aasp_base/1986
    # smoke test: a few batches, two epochs
    python recipes/finetune/train.py hparams/finetune/esc50.yaml \
        --data_folder=/data/ESC-50 --pretrained_path=... --debug

One script serves every dataset: a dataset is a YAML (``task: esc50``) plus
its preparation module (:func:`aasp_sb.data.tasks.get_task`); ``task: csv``
takes ``train.csv``/``valid.csv``/``test.csv`` (+ ``classes.txt``) from
``data_folder`` as they are (e.g. the demo corpus of
:func:`aasp_sb.data.demo.make_demo_corpus`).

With ``pretrained_path`` the model keys (``embed_dim``, ``depth``,
``use_aape``, ...) are taken from the pre-training run, the weights of its
student (or ``pretrained_which: teacher``) encoder are loaded, and the model
the YAML builds is checked to compute exactly what the run's does.
``pretrained_parts: stem`` (or ``blocks``) transfers only the patch stem (or
everything but it) and keeps the YAML's seeded random init elsewhere.
``pretrained_path`` may also be one of M2D's published ``checkpoint-*.pth``
files (:mod:`aasp_sb.m2d`): the YAML then builds M2D's encoder (plain stem,
CLS token, M2D's position layout, its sizes and ``norm_stats``) and loads its
online encoder (or ``pretrained_which: teacher``: the EMA target encoder).

Cross-validation tasks (ESC-50, US8K) run every fold (or ``--folds``), each in
``<output_folder>/<fold>/`` with a fresh model; single-split tasks run in
``<output_folder>``. Each run writes ``results.json`` and
``test_per_class.csv``; ``summary.json``/``summary.md`` hold the mean and 95 %
CI over the splits that ran. Re-running the same command resumes unfinished
splits from their last checkpoint and reuses finished ones.
"""

import json
import logging
import math
import os
import pathlib
import sys

from aasp_sb import cli  # noqa: F401  (first: silences SpeechBrain's torchvision warning)

# isort: split
import ruamel.yaml
import speechbrain as sb
import torch
import yaml
from hyperpyyaml import load_hyperpyyaml, resolve_references
from speechbrain.utils.distributed import if_main_process, run_on_main

from aasp_sb.brains.finetune import (
    FinetuneBrain,
    architecture_overrides,
    check_finetune_hparams,
    check_same_model,
    protocol_split,
    select_pretrained_parts,
)
from aasp_sb.cli import check_overrides
from aasp_sb.data.folder import read_csv
from aasp_sb.data.pipeline import labelled_dataset, read_classes
from aasp_sb.data.tasks import Split, TaskInfo, get_task, valid_source
from aasp_sb.distributed import finish_distributed, init_distributed
from aasp_sb.evaluation.metrics import format_mean_ci, mean_ci95
from aasp_sb.m2d import is_m2d_checkpoint, m2d_pretrained_parts
from aasp_sb.pretrained import (
    PretrainedParts,
    find_hparams,
    load_pretrained,
    load_state,
    load_yaml,
)

logger = logging.getLogger(__name__)

CSV_TASK = "csv"


# ---------------------------------------------------------------- arguments
def parse_overrides(overrides):
    """SpeechBrain's YAML override string -> dict (``{}`` when empty)."""
    if isinstance(overrides, dict):
        return dict(overrides)
    return dict(yaml.safe_load(overrides or "") or {})


def read_keys(yaml_text, overrides):
    """Plain top-level values of a HyperPyYAML file, without building any object."""
    resolved = resolve_references(yaml_text, overrides).getvalue()
    return ruamel.yaml.YAML(typ="rt").load(resolved)


def parse_folds(folds):
    """``None``, ``"fold1,fold2"`` or a list -> list of names (None = all)."""
    if folds is None or folds == "":
        return None
    if isinstance(folds, str):
        return [f.strip() for f in folds.split(",") if f.strip()]
    return [str(f) for f in folds]


# -------------------------------------------------------------------- data
def prepare_csv_task(data_folder, save_folder, seed=0, multilabel=False):
    """A task given as ``train.csv``, ``valid.csv``, ``test.csv`` (+ ``classes.txt``).

    Arguments
    ---------
    data_folder : str
        Folder with the three manifests (``ID,duration,wav,label``).
    save_folder : str
        Where ``classes.txt`` is written when ``data_folder`` has none.
    seed : int
        Unused (the split is given).
    multilabel : bool
        Labels are ``;``-joined class names.

    Returns
    -------
    info : TaskInfo
    splits : list of Split
        One split named ``csv``.
    """
    del seed
    root = pathlib.Path(data_folder)
    paths = {p: root / f"{p}.csv" for p in ("train", "valid", "test")}
    missing = [str(p) for p in paths.values() if not p.is_file()]
    if missing:
        raise FileNotFoundError(f"csv task: missing manifests {missing}")
    classes_path = root / "classes.txt"
    if classes_path.is_file():
        classes = read_classes(str(classes_path))
    else:
        names = set()
        for row in read_csv(str(paths["train"])):
            parts = row["label"].split(";") if multilabel else [row["label"]]
            names.update(p.strip() for p in parts if p.strip())
        classes = sorted(names)
        classes_path = pathlib.Path(save_folder) / "classes.txt"
        classes_path.parent.mkdir(parents=True, exist_ok=True)
        classes_path.write_text(
            "".join(f"{c}\n" for c in classes), encoding="utf-8"
        )
    info = TaskInfo(
        name=CSV_TASK,
        num_classes=len(classes),
        multilabel=bool(multilabel),
        metric="mAP" if multilabel else "accuracy",
        clip_seconds=0.0,
        sample_rate=16000,
        folds=None,
    )
    split = Split(
        CSV_TASK,
        *(str(paths[p].absolute()) for p in ("train", "valid", "test")),
    )
    return info, [split]


def prepare_data(keys):
    """Runs the task's preparation (main process first) and returns its result.

    Returns
    -------
    info : TaskInfo
    splits : list of Split
    classes_path : str
    """
    task = str(keys["task"])
    if task == CSV_TASK:
        kwargs = dict(
            data_folder=keys["data_folder"],
            save_folder=keys["prep_folder"],
            multilabel=bool(keys.get("multilabel", False)),
        )
        run_on_main(prepare_csv_task, kwargs=kwargs)
        info, splits = prepare_csv_task(**kwargs)
        local = pathlib.Path(keys["data_folder"]) / "classes.txt"
        classes_path = (
            local
            if local.is_file()
            else pathlib.Path(keys["prep_folder"]) / "classes.txt"
        )
        return info, splits, str(classes_path)
    module = get_task(task)
    # The split's own seed (``prep_seed``), never the training ``seed``: every
    # fine-tuning seed (and the linear evaluation) is scored on the same split.
    kwargs = dict(
        data_folder=keys["data_folder"],
        save_folder=keys["prep_folder"],
        seed=int(keys.get("prep_seed", 0) or 0),
        **dict(keys.get("prepare_options") or {}),
    )
    run_on_main(module.prepare, kwargs=kwargs)
    info, splits = module.prepare(**kwargs)
    return info, splits, os.path.join(keys["prep_folder"], "classes.txt")


def select_splits(info, splits, folds):
    """The splits to run: all, or the requested folds (in the task's order)."""
    wanted = parse_folds(folds)
    if wanted is None:
        return list(splits)
    names = [s.name for s in splits]
    unknown = [f for f in wanted if f not in names]
    if unknown:
        raise ValueError(
            f"{info.name}: unknown folds {unknown}; available: {names}"
        )
    return [s for s in splits if s.name in wanted]


def dataio_prep(hparams, split, info, classes_path):
    """Random crops of ``crop_seconds`` for training; whole clips for valid/test.

    Training crops are zero-padded to the crop length, their real fraction
    (``rel_length``) masks the padding; evaluation clips are whole (or cut at
    ``eval_crop_seconds``), sorted by duration, batch-padded by ``PaddedBatch``
    (relative lengths), and unreadable clips are flagged (``valid``) and left
    out of the metrics instead of being substituted.
    """
    common = dict(
        classes=classes_path,
        multilabel=info.multilabel,
        sample_rate=hparams["sample_rate"],
    )
    train = labelled_dataset(
        split.train_csv,
        hparams["crop_seconds"],
        mode="random",
        pad="zero",
        seed=hparams["seed"],
        **common,
    )
    train.set_output_keys(["id", "sig", "label", "rel_length"])
    evals = []
    for csv in (split.valid_csv, split.test_csv):
        ds = labelled_dataset(
            csv,
            hparams.get("eval_crop_seconds"),
            mode="start",
            pad="none",
            on_error="zero",
            **common,
        )
        ds.set_output_keys(["id", "sig", "label", "valid"])
        if len(ds):
            ds = ds.filtered_sorted(sort_key="duration")
        evals.append(ds)
    valid, test = evals
    return train, (valid if len(valid) else None), test


# ------------------------------------------------------------------- model
def load_reference(keys):
    """The pre-trained run (weights) or architecture source, if any.

    Returns
    -------
    parts : PretrainedParts or None
    has_weights : bool
    source : str or None
    """
    model_hparams = keys.get("model_hparams")
    yaml_file = None
    if model_hparams:
        path = pathlib.Path(str(model_hparams))
        yaml_file = path if path.is_file() else find_hparams(path)
    if keys.get("pretrained_path") and is_m2d_checkpoint(keys["pretrained_path"]):
        source = str(keys["pretrained_path"])  # one of M2D's checkpoint-*.pth files
        parts = m2d_pretrained_parts(source, which=keys.get("pretrained_which", "student"))
        return parts, True, source
    if keys.get("pretrained_path"):
        source = str(keys["pretrained_path"])
        parts = load_pretrained(
            source,
            which=keys.get("pretrained_which", "student"),
            hparams_file=yaml_file,
        )
        return parts, True, source
    if yaml_file is not None:
        hp = load_yaml(yaml_file)
        parts = PretrainedParts(
            hp["compute_features"].eval(), hp["encoder"].eval(), hp, None
        )
        return parts, False, str(yaml_file)
    return None, False, None


def merge_architecture(overrides, reference):
    """Adds the reference run's model keys to ``overrides`` (conflicts are errors)."""
    if reference is None:
        return dict(overrides)
    arch = architecture_overrides(reference)
    clash = {
        k: (overrides[k], v)
        for k, v in arch.items()
        if k in overrides and overrides[k] != v
    }
    if clash:
        raise ValueError(
            "Command-line model keys contradict the pre-trained model "
            f"(given, run): {clash}; drop them, the run defines the model"
        )
    return {**overrides, **arch}


def resolve_precision(hparams, run_opts):
    """bf16 autocast on CUDA as the YAML says; fp32 on CPU unless ``--precision``."""
    device = getattr(run_opts, "device", None) or (
        "cuda:0" if torch.cuda.is_available() else "cpu"
    )
    overridden = getattr(run_opts, "overridden_args", set())
    if "precision" not in overridden and not str(device).startswith("cuda"):
        hparams["precision"] = "fp32"


# -------------------------------------------------------------------- runs
def run_split(ctx, split):
    """Fine-tunes and tests one split; returns its results record."""
    keys = ctx["keys"]
    folder = (
        os.path.join(keys["output_folder"], split.name)
        if ctx["info"].folds
        else keys["output_folder"]
    )
    overrides = {**ctx["overrides"], "split_folder": folder}
    results_path = os.path.join(folder, "results.json")
    debug = bool(getattr(ctx["run_opts"], "debug", False))
    if os.path.isfile(results_path) and not debug:
        with open(results_path, encoding="utf-8") as f:
            record = json.load(f)
        if not record.get("debug"):
            logger.info(
                "%s already finished (%s): reusing it", split.name, results_path
            )
            return record
    if folder != keys["output_folder"]:
        sb.create_experiment_directory(
            experiment_directory=folder,
            hyperparams_to_save=ctx["hparams_file"],
            overrides=overrides,
            save_env_desc=False,  # the output folder has env.log
        )
    hparams = load_hyperpyyaml(ctx["yaml_text"], overrides)
    check_finetune_hparams(hparams)
    resolve_precision(hparams, ctx["run_opts"])
    info, reference = ctx["info"], ctx["reference"]
    if reference is not None:
        if not ctx.get("checked"):
            check_same_model(
                reference,
                hparams["compute_features"],
                hparams["encoder"],
                ctx["source"],
            )
            ctx["checked"] = True
        if ctx["has_weights"]:
            state = select_pretrained_parts(
                reference.encoder.state_dict(),
                hparams["encoder"].state_dict(),  # the YAML's seeded random init
                hparams.get("pretrained_parts", "all"),
            )
            load_state(hparams["encoder"], state, reference.checkpoint)
            parts = hparams.get("pretrained_parts", "all")
            n_loaded = sum(  # tensors taken from the run (the rest: fresh init)
                1 for k in state
                if parts == "all" or k.startswith("stem.") == (parts == "stem")
            )
            logger.info(
                "Loaded pre-trained %s weights (pretrained_parts: %s, %d "
                "tensors) from %s (given as %s)",
                keys.get("pretrained_which", "student"), parts, n_loaded,
                reference.checkpoint, ctx["source"],
            )
    if not ctx["has_weights"]:
        logger.info(
            "No pre-trained weights loaded (pretrained_path: null): the encoder "
            "starts from the YAML's seeded random init"
        )
    split, selection = protocol_split(
        split,
        hparams.get("protocol", "clean"),
        valid_source(keys["task"]),
        folder,
    )
    if selection == "evar_holdout":
        logger.warning(
            "protocol: evar on %s: the holdout goes back into training and "
            "the TEST set selects the epoch (EVAR finetune.py); the reported "
            "score is optimistic", keys["task"],
        )
    hparams.update(
        multilabel=info.multilabel,
        classes=ctx["classes"],
        split_name=split.name,
        task=keys["task"],
        selection=selection,
    )
    train, valid, test = dataio_prep(hparams, split, info, ctx["classes_path"])
    if hparams.get("use_tensorboard"):
        from speechbrain.utils.train_logger import TensorboardLogger

        hparams["tensorboard_logger"] = TensorboardLogger(os.path.join(folder, "tensorboard"))
    brain = FinetuneBrain(
        modules=hparams["modules"],
        opt_class=hparams["opt_class"],
        hparams=hparams,
        run_opts=ctx["run_opts"],
        checkpointer=hparams["checkpointer"],
    )
    batch = max(1, min(int(hparams["batch_size"]), len(train)))
    drop_last = bool(hparams.get("drop_last", True))
    if not drop_last and len(train) % batch == 1:
        # BatchNorm (the head) cannot train on a batch of one clip
        logger.info("drop_last: False, but the last batch would hold 1 clip: dropped")
        drop_last = True
    brain.fit(
        hparams["epoch_counter"],
        train,
        valid,
        train_loader_kwargs={
            "batch_size": batch,
            "shuffle": True,
            "drop_last": drop_last,
            "num_workers": hparams["num_workers"],
        },
        valid_loader_kwargs={
            "batch_size": hparams["test_batch_size"],
            "num_workers": hparams["num_workers"],
        },
    )
    brain.evaluate(
        test,
        max_key="metric",
        test_loader_kwargs={
            "batch_size": hparams["test_batch_size"],
            "num_workers": hparams["num_workers"],
        },
    )
    if if_main_process():
        write_task_file(folder, hparams, info, ctx)
    return brain.test_results


def write_task_file(folder, hparams, info, ctx):
    """``task.json``: what :class:`aasp_sb.classify.AudioClassifier` needs besides weights."""
    display = pathlib.Path(ctx["classes_path"]).parent / "display_names.txt"
    record = {
        "task": str(hparams["task"]),
        "split": hparams["split_name"],
        "classes": list(ctx["classes"]),
        "display_names": read_classes(str(display))
        if display.is_file()
        else None,
        "multilabel": bool(info.multilabel),
        "metric": "mAP" if info.multilabel else "accuracy",
        "pooling": hparams.get("pooling", "tokens"),
        "sample_rate": int(hparams["sample_rate"]),
    }
    with open(os.path.join(folder, "task.json"), "w", encoding="utf-8") as f:
        json.dump(record, f, indent=2)


def summarize(output_folder, task, metric, results):
    """Writes ``summary.json`` and ``summary.md`` (mean ± 95 % CI over the splits).

    Arguments
    ---------
    output_folder : str
        Where the files go.
    task : str
        Task name.
    metric : str
        ``accuracy`` or ``mAP``.
    results : dict
        ``{split name: results record}`` of the splits that ran.

    Returns
    -------
    dict
        The summary.
    """
    values = {name: r["test"] for name, r in results.items()}
    finite = [v for v in values.values() if v is not None]
    mean, half = (float("nan"), float("nan"))
    if (
        finite
    ):  # float64 in, so the mean is exactly that of the results.json values
        mean, half = mean_ci95(torch.tensor(finite, dtype=torch.float64))
    summary = {
        "task": task,
        "metric": metric,
        "splits": values,
        "num_splits": len(finite),
        "mean": None if math.isnan(mean) else mean,
        "ci95": None if math.isnan(half) else half,
        "debug": any(bool(r.get("debug")) for r in results.values()),
        # what varies inside the CI: the splits (folds), one training seed
        "ci95_over": "splits",
        "protocol": sorted({str(r.get("protocol", "clean")) for r in results.values()}),
        "optimistic": any(bool(r.get("optimistic")) for r in results.values()),
    }
    if if_main_process():
        os.makedirs(output_folder, exist_ok=True)
        with open(
            os.path.join(output_folder, "summary.json"), "w", encoding="utf-8"
        ) as f:
            json.dump(summary, f, indent=2)
        lines = [f"| {task} split | test {metric} (%) |", "|---|---|"]
        lines += [
            f"| {name} | {'n/a' if v is None else f'{100 * v:.2f}'} |"
            for name, v in values.items()
        ]
        lines.append(
            f"| **mean ± 95% CI** (over the splits) | **{format_mean_ci(mean, half)}** |"
        )
        if summary["optimistic"]:
            lines.append(
                "\nprotocol: evar -- the epoch was selected on the test set "
                "(EVAR finetune.py): optimistic."
            )
        with open(
            os.path.join(output_folder, "summary.md"), "w", encoding="utf-8"
        ) as f:
            f.write("\n".join(lines) + "\n")
        logger.info(
            "%s: test %s %s over %d split(s)",
            task,
            metric,
            format_mean_ci(mean, half),
            len(finite),
        )
    return summary


def main(argv=None):
    """Parses arguments, prepares the task, fine-tunes every split, summarises.

    Returns
    -------
    dict
        The summary (see :func:`summarize`), plus ``results`` (per split).
    """
    hparams_file, run_opts, overrides = sb.parse_arguments(
        sys.argv[1:] if argv is None else argv
    )
    check_overrides(hparams_file, overrides, prog="train.py")
    init_distributed(run_opts)  # ddp_init_group, safe across torchrun restarts
    overrides = parse_overrides(overrides)
    with open(hparams_file, encoding="utf-8") as fin:
        yaml_text = fin.read()
    keys = read_keys(yaml_text, overrides)
    check_finetune_hparams(keys)  # fail before any preparation
    reference, has_weights, source = load_reference(keys)
    overrides = merge_architecture(overrides, reference)
    try:
        info, splits, classes_path = prepare_data(keys)
    except FileNotFoundError as err:  # LayoutError too: the file or folder is named
        raise SystemExit(f"train.py: error: {err} (check --data_folder)") from None
    overrides["num_classes"] = int(info.num_classes)
    sb.create_experiment_directory(
        experiment_directory=keys["output_folder"],
        hyperparams_to_save=hparams_file,
        overrides=overrides,
    )
    selected = select_splits(info, splits, keys.get("folds"))
    ctx = {
        "keys": keys,
        "overrides": overrides,
        "yaml_text": yaml_text,
        "hparams_file": hparams_file,
        "run_opts": run_opts,
        "info": info,
        "classes": read_classes(classes_path),
        "classes_path": classes_path,
        "reference": reference,
        "has_weights": has_weights,
        "source": source,
    }
    results = {}
    for i, split in enumerate(selected):
        logger.info(
            "=== %s: split %s (%d/%d) ===",
            keys["task"],
            split.name,
            i + 1,
            len(selected),
        )
        results[split.name] = run_split(ctx, split)
    summary = summarize(
        keys["output_folder"],
        str(keys["task"]),
        "mAP" if info.multilabel else "accuracy",
        results,
    )
    summary["results"] = results
    return summary


if __name__ == "__main__":
    main()
    finish_distributed()
