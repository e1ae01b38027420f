#!/usr/bin/env python3
"""The embedded default: pre-train AaSP-tiny on a generated corpus and evaluate it, on CPU.

Steps (all outputs under ``--output_folder``, default ``results/demo``):

1. generate the demo corpus (8 procedural sound classes, five of which differ
   only by a modulation rate inside the alias-prone band);
2. pre-train ``hparams/aasp_tiny.yaml`` on its training audio (labels unused),
   and the same model with the plain patch stem (``use_aape=False``);
3. linear evaluation (EVAR protocol, 3 seeds) of both pre-trained encoders and
   of the same AaPE model at random initialisation;
4. aliasing stability (embedding cosine under 1..15-frame shifts) of all three;
5. print and write ``RESULTS.md``: training curves and the results table.

Usage::

    python recipes/demo/run_demo.py [--output_folder results/demo] [--epochs 30]

Re-running reuses what is already there (corpus, finished pre-training runs,
cached embeddings).
"""

import argparse
import json
import logging
import pathlib
import re
import sys
import time

from aasp_sb.cli import parse_args_or_suggest
from aasp_sb.recipe_import import import_recipe

ROOT = pathlib.Path(__file__).resolve().parents[2]
TINY = ROOT / "hparams" / "aasp_tiny.yaml"

logger = logging.getLogger("aasp_demo")


def load_pretrain_recipe():
    """Imports recipes/pretrain/train.py."""
    return import_recipe(ROOT / "recipes" / "pretrain" / "train.py", "aasp_pretrain_recipe")


def pretrain(corpus, out, epochs, extra):
    """Runs (or resumes / reuses) one tiny pre-training."""
    args = [
        str(TINY),
        f"--data_folder={corpus['folder']}",
        f"--train_csv={corpus['train']}",
        f"--valid_csv={corpus['valid']}",
        f"--output_folder={out}",
        f"--number_of_epochs={epochs}",
        "--device=cpu",
    ] + [f"--{k}={v}" for k, v in extra.items()]
    load_pretrain_recipe().main(args)
    return out


def read_jsonl(path):
    """Rows of a JSON-lines file."""
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def curve_table(runs):
    """Markdown table of per-epoch regression loss and RankMe for each run."""
    lines = ["| epoch | " + " | ".join(
        f"{name} train reg. | {name} valid reg. | {name} RankMe" for name in runs
    ) + " |"]
    lines.append("|---" * (1 + 3 * len(runs)) + "|")
    per_run = {name: read_jsonl(pathlib.Path(out) / "epochs.jsonl") for name, out in runs.items()}
    num = max(len(rows) for rows in per_run.values())
    for i in range(num):
        cells = [str(i + 1)]
        for rows in per_run.values():
            if i < len(rows):
                r = rows[i]
                cells += [f"{r['train_regression']:.3f}", f"{r['valid_regression']:.3f}",
                          f"{r['valid_rankme']:.1f}"]
            else:
                cells += ["", "", ""]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv=None):
    """Runs the demo and prints the results table."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--output_folder", default="results/demo")
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--per_class", type=int, default=40, help="clips per class")
    parser.add_argument("--seeds", type=int, default=3, help="linear-probe seeds")
    parser.add_argument("--skip_ablation", action="store_true",
                        help="do not pre-train the plain-stem ablation")
    parser.add_argument("--student_stem_input", default="view", choices=("view", "clip"),
                        help="clip: the leaking ablation (the student's stem sees the "
                        "whole clip); use another --output_folder")
    parser.add_argument("--finetune", action="store_true",
                        help="also fine-tune the demo task from the pre-trained "
                        "and from a random init, with all and with 8 labelled "
                        "clips per class, and the plain-stem ablation with all "
                        "(about 9 more minutes)")
    args = parse_args_or_suggest(parser, argv)
    logging.basicConfig(level=logging.INFO, format="%(name)s - %(message)s")

    import torch

    from aasp_sb.analysis.stability import compare_checkpoints
    from aasp_sb.data.demo import make_demo_corpus
    from aasp_sb.evaluation.linear_eval import csv_task, evaluate_tasks
    from aasp_sb.evaluation.metrics import format_mean_ci
    from aasp_sb.inference import load_encoder

    torch.set_num_threads(max(1, torch.get_num_threads()))
    out = pathlib.Path(args.output_folder).resolve()
    start = time.time()
    folder = out / "corpus"
    corpus = make_demo_corpus(str(folder), num_per_class=args.per_class)
    corpus["folder"] = str(folder)

    runs = {"AaSP (AaPE)": out / "pretrain_aasp"}
    stem_input = {"student_stem_input": args.student_stem_input}
    pretrain(corpus, runs["AaSP (AaPE)"], args.epochs, {"use_aape": True, **stem_input})
    if not args.skip_ablation:
        runs["plain stem"] = out / "pretrain_plain"
        pretrain(corpus, runs["plain stem"], args.epochs, {"use_aape": False, **stem_input})
    t_pretrain = time.time() - start

    task = csv_task("demo", corpus["train"], corpus["valid"], corpus["test"],
                    clip_seconds=4.0, classes=corpus["classes"])
    models = {name: load_encoder(str(run), device="cpu") for name, run in runs.items()}
    models["random init (AaPE)"] = load_encoder(
        str(runs["AaSP (AaPE)"]), random_init=True, seed=0, device="cpu"
    )
    seeds = tuple(range(args.seeds))
    scores = {}
    for name, model in models.items():
        slug = name.split(" ")[0].lower().strip("()")
        res = evaluate_tasks(model, [task], out / "linear_eval" / slug, seeds=seeds,
                             progress=False)
        scores[name] = res["demo"]

    stab = compare_checkpoints([str(r) for r in runs.values()], corpus["test"],
                               names=list(runs), shifts=range(1, 16), max_clips=48)
    stab_overall = {n: m["overall"] for n, m in stab["models"].items()}
    with open(out / "stability.json", "w", encoding="utf-8") as f:
        json.dump(stab, f, indent=1)

    lines = [
        "# aasp_sb demo results",
        "",
        f"Corpus: {args.per_class} clips x 8 classes (train/valid/test "
        f"{len(read_jsonl_csv(corpus['train']))}/{len(read_jsonl_csv(corpus['valid']))}/"
        f"{len(read_jsonl_csv(corpus['test']))}); pre-training: aasp_tiny, "
        f"{args.epochs} epochs; linear probe: EVAR protocol, {len(seeds)} seeds, "
        "mean ± 95% CI. Wall time: "
        f"pre-training {t_pretrain / 60:.1f} min, total {(time.time() - start) / 60:.1f} min (CPU).",
        "",
        "## Pre-training curves (per epoch)",
        "",
        curve_table(runs),
        "",
        "## Linear evaluation on the demo task, and aliasing stability",
        "",
        "| model | linear-probe accuracy (%) | stability (centred cos, shifts 1-15) |",
        "|---|---|---|",
    ]
    for name, res in scores.items():
        acc = format_mean_ci(res["mean"], res["ci95"])
        st = stab_overall.get(name)
        lines.append(f"| {name} | {acc} | {st:.4f} |" if st is not None else f"| {name} | {acc} | - |")
    if args.finetune:
        lines += ["", "## Fine-tuning on the demo task (hparams/finetune/demo.yaml)", ""]
        lines += finetune_comparison(runs, folder, out / "finetune_compare")
    report = "\n".join(lines) + "\n"
    (out / "RESULTS.md").write_text(report, encoding="utf-8")
    print("\n" + report)
    return scores


#: Training of the few-label setting (fewer steps per epoch, so more epochs)
FEW_LABEL_TRAINING = {"number_of_epochs": 100, "warmup_epochs": 5}


def finetune_comparison(runs, corpus_folder, out, labels_per_class=8, overrides=None):
    """Fine-tunes from each pre-trained run and from random init; returns table lines.

    Each comparison is ``recipes/finetune/compare_init.py`` (same architecture,
    settings and seed in both arms). The first run is compared on every
    training clip (``hparams/finetune/demo.yaml`` as is) and on the first
    ``labels_per_class`` clips of each class with :data:`FEW_LABEL_TRAINING`;
    the others (the plain-stem ablation) on every training clip.

    Arguments
    ---------
    runs : dict
        Model name -> pre-training run folder, the AaSP run first.
    corpus_folder : pathlib.Path
        The demo corpus.
    out : pathlib.Path
        Output folder (``<slug>_all/``, ``<slug>_few/`` below it).
    labels_per_class : int
        Clips per class of the few-label setting.
    overrides : dict, optional
        Fine-tuning YAML overrides for every comparison (e.g. shorter training).

    Returns
    -------
    list of str
        Markdown table lines.
    """
    module = import_recipe(ROOT / "recipes" / "finetune" / "compare_init.py", "aasp_compare_init")
    overrides = dict(overrides or {})
    few = {**FEW_LABEL_TRAINING, **overrides}
    all_name = f"all training clips, {overrides.get('number_of_epochs', 30)} epochs"
    few_name = f"{labels_per_class} clips per class, {few['number_of_epochs']} epochs"
    settings = []
    for i, (model, run) in enumerate(runs.items()):
        slug = re.sub(r"[^a-z0-9]+", "_", model.lower()).strip("_")
        settings.append((model, run, all_name, out / f"{slug}_all", overrides, None))
        if i == 0:
            settings.append(
                (model, run, few_name, out / f"{slug}_few", few, labels_per_class)
            )
    lines = ["| model | labelled data | pre-trained init (%) | random init (%) |",
             "|---|---|---|---|"]
    for model, run, name, folder, keys, per_class in settings:
        args = [f"--pretrained_path={run}", f"--corpus={corpus_folder}",
                f"--output_folder={folder}", "--device=cpu"]
        args += [f"--{k}={v}" for k, v in keys.items()]
        if per_class:
            args.append(f"--labels_per_class={per_class}")
        module.main(args)
        with open(pathlib.Path(folder) / "compare.json", encoding="utf-8") as f:
            res = json.load(f)
        lines.append(f"| {model} | {name} | {100 * float(res['pretrained']):.2f} | "
                     f"{100 * float(res['random']):.2f} |")
    return lines


def read_jsonl_csv(path):
    """Data rows of a CSV manifest (for counting)."""
    with open(path, encoding="utf-8") as f:
        return [line for line in f.readlines()[1:] if line.strip()]


if __name__ == "__main__":
    main(sys.argv[1:])
