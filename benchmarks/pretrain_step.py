#!/usr/bin/env python3
"""Times one AaSP pre-training step built from ``hparams/aasp_<config>.yaml``.

A step is :meth:`AaSPBrain.fit_batch` on random waveforms of the config's
crop length: log-mel, stem (AaPE or plain), multi-mask, student on the
visible tokens, cross-attention predictor, EMA-teacher targets, regression +
contrastive loss, backward, clipping, AdamW, lr schedule and EMA update.

Usage::

    python benchmarks/pretrain_step.py --config tiny
    python benchmarks/pretrain_step.py --config base --batch 2 --steps 3
    python benchmarks/pretrain_step.py --config base --device cuda \
        --precision bf16 --compile --batch 256 --steps 20 --warmup 5

Prints the settings, the peak memory (see ``bench_utils`` for what is
measured on CPU vs CUDA) and, as its last line, ``median_step_ms=<float>``.
On CPU the defaults are one torch thread and the process CPU-time clock
(robust on a shared machine); ``--threads 0 --clock wall`` gives torch's
default threads and elapsed time.
"""

import argparse

import bench_utils as bu
import torch

# Small CPU defaults so every config finishes in about a minute on 2 cores.
CPU_BATCH = {"tiny": 16, "small": 4, "base": 2}


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", choices=bu.CONFIGS, default="tiny")
    p.add_argument("--no-aape", action="store_true", help="plain patch stem")
    p.add_argument("--batch", type=int, default=None,
                   help="clips per step (default: YAML batch_size on CUDA, "
                        f"{CPU_BATCH} on CPU)")
    p.add_argument("--masks", type=int, default=None,
                   help="masks per clip (default: the YAML's num_masks)")
    p.add_argument("--teacher-input", choices=("masked", "full"), default=None)
    p.add_argument("--steps", type=int, default=5, help="timed steps")
    p.add_argument("--warmup", type=int, default=2,
                   help="untimed steps first (at least 3 with --compile: the "
                        "teacher's no-grad calls and the predictor's position "
                        "cache each trigger one recompilation)")
    bu.add_common_args(p)
    p.add_argument("--seed", type=int, default=0)
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    bu.setup(args)
    if args.compile:
        args.warmup = max(args.warmup, 3)
    cuda = args.device.startswith("cuda")
    precision = args.precision
    overrides = bu.parse_yaml_overrides(args.set)
    overrides.update(bu.objective_overrides(
        use_aape=False if args.no_aape else None,
        masks=args.masks,
        teacher_input=args.teacher_input,
    ))
    if args.batch is None:
        args.batch = (
            bu.yaml_int(args.config, "batch_size") if cuda
            else CPU_BATCH[args.config]
        )
    torch.manual_seed(args.seed)
    brain = bu.build_brain(
        args.config,
        overrides,
        device=args.device,
        precision=precision,
        compile=args.compile,
        batch_size=args.batch,
    )
    hp = vars(brain.hparams)
    batch = bu.random_batch(args.batch, bu.crop_samples(hp), seed=args.seed)
    n_params = sum(
        p.numel() for g in brain.optimizer.param_groups for p in g["params"]
    )
    print(
        f"config={args.config} use_aape={hp['use_aape']} batch={args.batch} "
        f"masks={hp['num_masks']} teacher_input={hp['teacher_input']} "
        f"crop_frames={hp['crop_frames']} precision={precision} "
        f"compile={args.compile} trainable_params={n_params / 1e6:.2f}M"
    )
    print(f"device={bu.device_name(args.device)} clock={args.clock}")

    if cuda:
        torch.cuda.reset_peak_memory_stats()
    bu.reset_peak_rss()
    rss_before = bu.rss_mb()
    for _ in range(args.warmup):
        bu.train_step(brain, batch)
    times = [
        bu.timed(lambda: bu.train_step(brain, batch), args.device, args.clock)
        for _ in range(max(1, args.steps))
    ]
    med = bu.median(times)
    print("step_ms=" + ",".join(f"{t:.1f}" for t in times))
    print(f"clips_per_s={1000.0 * args.batch / med:.2f}")
    if cuda:
        peak = torch.cuda.max_memory_allocated() / 2**20
        print(f"peak_memory_mb={peak:.1f} (torch.cuda.max_memory_allocated)")
    else:
        peak = bu.peak_rss_mb()
        print(
            f"peak_memory_mb={peak:.1f} (peak RSS, whole process) "
            f"step_rss_delta_mb={max(0.0, peak - rss_before):.1f}"
        )
    print(f"median_step_ms={med:.3f}")
    return med


if __name__ == "__main__":
    main()
