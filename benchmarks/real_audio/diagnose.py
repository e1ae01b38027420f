#!/usr/bin/env python3
"""Why does pre-training lose on the real-recordings benchmark? Numbers per layer and stem.

Reads a finished ``run.py`` output folder and, for the pre-trained AaPE and
plain-stem models and their random-init twins, reports:

* per encoder layer: linear-probe accuracy per task (EVAR probe, same crops as
  ``run.py``) and RankMe of the test-clip embeddings (effective rank, out of
  ``embed_dim``);
* AaPE: the fusion gate (mean |gate|), the ratio of alias-band to standard
  token norms (how much of each token the envelope branch supplies), and the
  Lambda encoder's ``alpha`` / ``omega`` statistics on test clips;
* the pre-training curves (``epochs.jsonl``: losses, RankMe, lr, EMA decay).

Usage::

    python benchmarks/real_audio/diagnose.py --output results/real_audio [--seeds 3]
    python benchmarks/real_audio/diagnose.py --over_training RUN   # every kept checkpoint

Writes ``DIAGNOSIS.md`` and ``diagnosis.json`` into the output folder.
"""

import argparse
import csv
import json
import logging
import pathlib
import sys

import numpy as np
import torch

HERE = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import build as rab  # noqa: E402
import run as rar  # noqa: E402

logger = logging.getLogger("real_audio.diagnose")


def read_rows(path):
    """Rows of a manifest."""
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def layer_embeddings(model, rows, mode, seconds, layers):
    """``{layer: [N, D]}`` mean-pooled embeddings of every listed layer (one pass)."""
    from aasp_sb.embed import embed_clips
    emb, _ = embed_clips(model, [r["wav"] for r in rows], keys=[r["ID"] for r in rows],
                         layer=list(layers), clip_seconds=seconds, crop=mode, crop_seed=0,
                         mask_padding=False, progress=False)
    per = emb.shape[1] // len(layers)
    return {k: emb[:, i * per:(i + 1) * per] for i, k in enumerate(layers)}


def probe_layers(model, tasks, seeds):
    """Per task and layer: probe accuracy (mean, ci95) and test RankMe."""
    from aasp_sb.evaluation.linear_eval import encode_labels
    from aasp_sb.evaluation.linear_probe import run_linear_eval
    from aasp_sb.evaluation.metrics import rankme
    layers = list(range(model.encoder.depth))
    out = {}
    for task, entry in tasks.items():
        classes = [c for c in pathlib.Path(entry["classes"]).read_text().split("\n") if c]
        parts = {}
        for role in rab.ROLES:
            rows = read_rows(entry[role])
            mode = "start" if role == "test" else "random"
            parts[role] = (layer_embeddings(model, rows, mode, entry["clip_seconds"], layers),
                           encode_labels(rows, classes, False, entry[role]))
        out[task] = {}
        for k in layers:
            split = {"name": "official"}
            for role in rab.ROLES:
                split[role] = (torch.from_numpy(parts[role][0][k]), parts[role][1])
            res = run_linear_eval([split], seeds=tuple(seeds), num_classes=len(classes),
                                  device="cpu")
            rk = float(rankme(torch.from_numpy(parts["test"][0][k])))
            out[task][k] = {"mean": res["mean"], "ci95": res["ci95"], "rankme": rk}
            logger.info("%s layer %d: %.3f, RankMe %.1f", task, k, res["mean"], rk)
    return out


@torch.no_grad()
def aape_stats(model, tasks, max_clips=64):
    """Gate, branch-norm ratio and (alpha, omega) statistics of an AaPE stem on test clips."""
    from aasp_sb.lobes.patch import prepare_frames
    stem = model.encoder.stem
    if not hasattr(stem, "last_lambda"):
        return None
    alphas, omegas, ratios = [], [], []
    for entry in tasks.values():
        rows = read_rows(entry["test"])[:max_clips]
        n = int(entry["clip_seconds"] * model.sample_rate)
        wavs = []
        for r in rows:
            from aasp_sb.data.audio import load_audio
            w = load_audio(r["wav"], model.sample_rate)[:n]
            wavs.append(torch.nn.functional.pad(w, (0, n - w.numel())))
        x = model.features(torch.stack(wavs))
        xf, valid = prepare_frames(x, None, stem.patch_size[1])
        std = stem.patchify(xf)
        env, alpha, omega = stem.envelope_features(xf, valid)
        aa = stem.alias_tokens(env)
        if stem.fusion == "gated_add":
            aa = stem.gate * aa
        ratios.append((aa.norm(dim=-1) / std.norm(dim=-1).clamp(min=1e-8)).flatten())
        alphas.append(alpha.flatten())
        omegas.append(omega.flatten())
    a, o, r = torch.cat(alphas), torch.cat(omegas), torch.cat(ratios)
    pt = stem.patch_size[1]
    gate = stem.gate.abs().mean().item() if hasattr(stem, "gate") else float("nan")

    def q(t):
        return [round(float(v), 4) for v in torch.quantile(t, torch.tensor([0.1, 0.5, 0.9]))]
    return {
        "gate_abs_mean": gate,
        "aa_over_std_norm_q10_50_90": q(r),
        "alpha_q10_50_90": q(a),
        "omega_over_pi_q10_50_90": q(o / np.pi),
        "omega_band": [1.0 / pt, 1.0],
        "omega_std_over_pi": float((o / np.pi).std()),
    }


def over_training(run, tasks, seeds, random_seed=0):
    """Per-layer probe accuracy and test RankMe at every kept checkpoint of one run.

    Pre-train with ``keep_checkpoints`` at least the number of epochs to keep
    them all. Row 0 is the architecture at random initialisation
    (``random_seed``), then one row per kept checkpoint, by epoch.

    Arguments
    ---------
    run : pathlib.Path
        Pre-training output folder (``save/CKPT+*``).
    tasks : dict
        The benchmark's tasks.
    seeds : sequence of int
        Probe seeds.
    random_seed : int
        Seed of the epoch-0 (random-init) row.

    Returns
    -------
    dict
        ``{epoch: {task: {layer: {"mean", "ci95", "rankme"}}}}``.
    """
    from aasp_sb.inference import load_encoder
    run = pathlib.Path(run)
    ckpts = []
    for ckpt in sorted(run.glob("save/CKPT+*")):
        counter = ckpt / "counter.ckpt"
        if counter.is_file():
            ckpts.append((int(counter.read_text().strip()), ckpt))
    if not ckpts:
        raise SystemExit(f"diagnose.py: no checkpoints under {run / 'save'}")
    logger.info("epoch 0 (random init)")
    result = {0: probe_layers(load_encoder(str(run), random_init=True, seed=random_seed,
                                           device="cpu"), tasks, seeds)}
    for epoch, ckpt in sorted(ckpts):
        logger.info("epoch %d", epoch)
        result[epoch] = probe_layers(load_encoder(str(ckpt), device="cpu"), tasks, seeds)
    return result


def layer_rows(label, per_task, tasks):
    """Table rows ``| label | layer | per-task % | mean % | RankMe |``, one per layer.

    Example
    -------
    >>> layer_rows("m", {"a": {0: {"mean": 0.5, "rankme": 3.0}}}, ["a"])
    ['| m | 1 | 50.0 | 50.0 | 3.0 |']
    """
    rows = []
    for k in sorted(per_task[tasks[0]]):
        accs = [per_task[t][k]["mean"] for t in tasks]
        rks = [per_task[t][k]["rankme"] for t in tasks]
        rows.append(f"| {label} | {k + 1} | " + " | ".join(f"{100 * a:.1f}" for a in accs)
                    + f" | {100 * sum(accs) / len(accs):.1f} | {sum(rks) / len(rks):.1f} |")
    return rows


def over_training_table(result, tasks):
    """Markdown: one row per (epoch, layer) with per-task accuracy, mean and RankMe.

    Example
    -------
    >>> r = {0: {"a": {0: {"mean": 0.5, "ci95": 0.1, "rankme": 3.0}}}}
    >>> over_training_table(r, ["a"]).splitlines()[-1]
    '| 0 | 1 | 50.0 | 50.0 | 3.0 |'
    """
    lines = ["| epoch | layer | " + " | ".join(tasks) + " | mean | RankMe (mean over tasks) |",
             "|---" * (len(tasks) + 4) + "|"]
    for epoch in sorted(result):
        lines += layer_rows(epoch, result[epoch], tasks)
    return "\n".join(lines)


def main(argv=None):
    """Runs the diagnosis on a finished benchmark output."""
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--output", default=str(rar.ROOT / "results" / "real_audio"))
    p.add_argument("--cache", default=rab.DEFAULT_CACHE)
    p.add_argument("--manifests", default=None)
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--over_training", default=None, metavar="RUN",
                   help="instead: per-layer probes and RankMe at every kept checkpoint of "
                   "this pre-training folder (writes OVER_TRAINING.md / .json into it)")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(name)s - %(message)s")
    torch.set_num_threads(args.threads)
    from aasp_sb.inference import load_encoder
    out = pathlib.Path(args.output)
    folder = (pathlib.Path(args.manifests) if args.manifests
              else pathlib.Path(args.cache).expanduser() / "manifests")
    bench = json.loads((folder / "benchmark.json").read_text(encoding="utf-8"))
    if args.over_training:
        run = pathlib.Path(args.over_training)
        result = over_training(run, bench["tasks"], range(args.seeds))
        report = ("# Over training: " + str(run) + "\n\n"
                  + over_training_table(result, list(bench["tasks"])) + "\n")
        (run / "OVER_TRAINING.md").write_text(report, encoding="utf-8")
        with open(run / "over_training.json", "w", encoding="utf-8") as f:
            json.dump(result, f, indent=1)
        print(report)
        return result
    runs = {"AaPE": out / "pretrain_aape", "plain": out / "pretrain_plain"}
    models = {}
    for name, run in runs.items():
        models[f"{name}, pre-trained"] = load_encoder(str(run), device="cpu")
        models[f"{name}, random init"] = load_encoder(str(run), random_init=True, seed=0,
                                                      device="cpu")
    result = {"layers": {}, "aape": {}, "curves": {n: rar.read_epochs(r) for n, r in runs.items()}}
    for name, model in models.items():
        logger.info("diagnosing %s", name)
        result["layers"][name] = probe_layers(model, bench["tasks"], range(args.seeds))
        stats = aape_stats(model, bench["tasks"])
        if stats:
            result["aape"][name] = stats
    tasks = list(bench["tasks"])
    lines = ["# Diagnosis", "", "## Probe accuracy (%) and test RankMe per encoder layer", "",
             "| model | layer | " + " | ".join(tasks) + " | mean | RankMe (mean over tasks) |",
             "|---" * (len(tasks) + 4) + "|"]
    for name, per_task in result["layers"].items():
        lines += layer_rows(name, per_task, tasks)
    lines += ["", "## AaPE stem statistics (test clips)", ""]
    for name, st in result["aape"].items():
        lines.append(f"- {name}: " + json.dumps(st))
    lines += ["", "## Pre-training curves", ""]
    for name, rows in result["curves"].items():
        lines.append(f"- {name}: " + "; ".join(
            f"ep {r['epoch']}: reg {r.get('train_regression', float('nan')):.3f}/"
            f"{r.get('valid_regression', float('nan')):.3f}, con "
            f"{r.get('train_contrastive', float('nan')):.2f}, RankMe "
            f"{r.get('valid_rankme', float('nan')):.1f}, ema {r.get('ema_decay', 0):.4f}"
            for r in rows))
    report = "\n".join(lines) + "\n"
    (out / "DIAGNOSIS.md").write_text(report, encoding="utf-8")
    with open(out / "diagnosis.json", "w", encoding="utf-8") as f:
        json.dump(result, f, indent=1, default=str)
    print(report)
    return result


if __name__ == "__main__":
    main(sys.argv[1:])
