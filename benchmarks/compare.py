#!/usr/bin/env python3
"""Relative costs of AaSP pre-training, measured as ratios within one run.

The machine these numbers come from may be shared and noisy, so every
comparison is *interleaved* (A B A B ... in rotating order, after warm-up)
and reported as the median of the per-round ratios, alongside the median
times and the ratio of the minimum times (the noise floor). On CPU the
defaults are one torch thread and the process CPU-time clock, which other
processes on a shared machine barely disturb (see ``bench_utils.setup``).
Sections (``--sections``, default all):

``scale``
    tiny / small / base step time at one batch size (``--batch``), and each
    config's peak memory measured in a fresh subprocess
    (``pretrain_step.py --warmup 0 --steps 1``; skip with ``--no-memory``).
``aape``
    AaPE's extra cost over the plain stem, same config and seed, for each of
    ``--aape-configs``: full-step paired ratio, plus a low-noise estimate
    from the stems alone (student stem forward+backward and teacher stem
    forward, AaPE minus plain, over the plain step time).
``teacher``
    ``teacher_input: masked`` vs ``full`` for 1, 2, 4, 8 masks: whole-step
    ratio and teacher-only (``AaSPBrain.teacher_targets``) ratio.
``inference``
    clips/s of the encoder on 10 s clips (log-mel + ``AudioViT.forward``,
    which chunks at the config's ``max_frames``), eval mode, no grad.
``data``
    loader throughput from float16 log-mel shards
    (``LogMelShardDataset`` + ``DataLoader``) and from audio files
    (``pretrain_dataset``), against the tiny config's step throughput, on a
    synthetic corpus of 10 s clips written to a temporary folder.

Usage::

    python benchmarks/compare.py                      # all sections, CPU
    python benchmarks/compare.py --sections aape teacher
    python benchmarks/compare.py --device cuda --batch 64 --tiny-batch 256 \
        --teacher-config base --teacher-batch 64 --infer-batch 64 --reps 10 \
        --data-workers 8

The last line is ``summary key=value ...`` with the headline ratios.
"""

import argparse
import math
import os
import re
import subprocess
import sys

import bench_utils as bu
import numpy as np
import torch

from aasp_sb.lobes.teacher import unwrap_module
from aasp_sb.masking import multi_mask

SECTIONS = ("scale", "aape", "teacher", "inference", "data")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sections", nargs="+", choices=SECTIONS, default=list(SECTIONS))
    p.add_argument("--configs", nargs="+", choices=bu.CONFIGS,
                   default=list(bu.CONFIGS), help="configs of 'scale'")
    p.add_argument("--batch", type=int, default=None,
                   help="clips per step for 'scale' and the base AaPE run "
                        "(default 2 on CPU, 64 on CUDA)")
    p.add_argument("--tiny-batch", type=int, default=None,
                   help="clips per tiny step ('aape' tiny, 'data'; default: "
                        "the tiny YAML's batch_size)")
    p.add_argument("--reps", type=int, default=3,
                   help="timed rounds of 'scale', base 'aape', 'inference', 'data'")
    p.add_argument("--warmup", type=int, default=1, help="untimed rounds")
    p.add_argument("--no-memory", action="store_true",
                   help="skip the peak-memory subprocesses of 'scale'")
    p.add_argument("--aape-configs", nargs="+", choices=bu.CONFIGS,
                   default=["tiny", "base"])
    p.add_argument("--tiny-reps", type=int, default=10,
                   help="timed rounds of the tiny AaPE on/off steps")
    p.add_argument("--micro-reps", type=int, default=10,
                   help="rounds of the stem / teacher micro-benchmarks")
    p.add_argument("--teacher-config", choices=bu.CONFIGS, default="tiny")
    p.add_argument("--teacher-batch", type=int, default=8)
    p.add_argument("--teacher-masks", nargs="+", type=int, default=[1, 2, 4, 8])
    p.add_argument("--teacher-reps", type=int, default=5)
    p.add_argument("--infer-configs", nargs="+", choices=bu.CONFIGS,
                   default=list(bu.CONFIGS))
    p.add_argument("--infer-batch", type=int, default=2)
    p.add_argument("--infer-seconds", type=float, default=10.0)
    p.add_argument("--data-clips", type=int, default=48,
                   help="synthetic 10 s clips written for 'data'")
    p.add_argument("--data-batches", type=int, default=8,
                   help="loader batches per timed round of 'data'")
    p.add_argument("--data-workers", type=int, default=0,
                   help="DataLoader workers (0: in the main process)")
    p.add_argument("--audio-format", default="flac", choices=("flac", "wav"))
    p.add_argument("--audio-sr", type=int, default=16000,
                   help="sample rate of the synthetic files (!= 16000 adds "
                        "resampling to the audio path, as raw AudioSet does)")
    bu.add_common_args(p)
    return p.parse_args(argv)


class Bench:
    """Builds (and caches) Brains and batches, runs the sections."""

    def __init__(self, args):
        self.args = args
        self.cuda = args.device.startswith("cuda")
        self.precision = args.precision
        self.base_overrides = bu.parse_yaml_overrides(args.set)
        self.batch = args.batch or (64 if self.cuda else 2)
        self.tiny_batch = args.tiny_batch or bu.yaml_int("tiny", "batch_size")
        self._brains = {}
        self.summary = {}

    # ----------------------------------------------------------- building
    def brain(self, config, batch, **objective):
        """A ready Brain plus a random batch of ``batch`` crops."""
        ov = dict(self.base_overrides)
        ov.update(bu.objective_overrides(**objective))
        # a key equal to the YAML's own value builds the same model: share it
        ov = {
            k: v for k, v in ov.items()
            if k in self.base_overrides or v != bu.yaml_value(config, k)
        }
        key = (config, tuple(sorted(ov.items())))
        if key not in self._brains:
            torch.manual_seed(0)
            self._brains[key] = bu.build_brain(
                config,
                ov,
                device=self.args.device,
                precision=self.precision,
                compile=self.args.compile,
                batch_size=batch,
            )
        brain = self._brains[key]
        data = bu.random_batch(batch, bu.crop_samples(vars(brain.hparams)))
        return brain, data

    def step_fn(self, brain, data):
        return lambda: bu.train_step(brain, data)

    def interleave(self, fns, warmup=None, reps=None, clock=None):
        warmup = self.args.warmup if warmup is None else warmup
        reps = self.args.reps if reps is None else reps
        return bu.interleaved(fns, warmup, max(1, reps), self.args.device,
                              clock or self.args.clock)

    # ------------------------------------------------------------- scale
    def scale(self):
        configs = self.args.configs
        print(f"\n== scale: step time per config (batch {self.batch}, "
              f"YAML masks/teacher_input, interleaved x{self.args.reps})")
        fns = {}
        for cfg in configs:
            brain, data = self.brain(cfg, self.batch)
            fns[cfg] = self.step_fn(brain, data)
        times = self.interleave(fns)
        ref = configs[0]
        memory = {} if self.args.no_memory else {
            cfg: self.memory(cfg) for cfg in configs
        }
        print(f"{'config':8s} {'median_ms':>10s} {'min_ms':>9s} {'clips/s':>9s} "
              f"{'x ' + ref:>8s} {'(min)':>7s} {'peak_mb':>9s} {'x ' + ref:>7s} "
              f"{'step_mb':>9s}")
        ref_peak = memory.get(ref, (math.nan,))[0]
        for cfg in configs:
            med = bu.median(times[cfg])
            ratio = bu.paired_ratio(times[cfg], times[ref])
            peak, delta = memory.get(cfg, (math.nan, math.nan))
            print(f"{cfg:8s} {med:10.1f} {min(times[cfg]):9.1f} "
                  f"{1000 * self.batch / med:9.2f} {ratio:8.2f} "
                  f"{bu.min_ratio(times[cfg], times[ref]):7.2f} {peak:9.1f} "
                  f"{peak / ref_peak:7.2f} {delta:9.1f}")
            self.summary[f"step_{cfg}_over_{ref}"] = ratio
            if cfg in memory:
                self.summary[f"peak_mem_{cfg}_over_{ref}"] = peak / ref_peak
        if not self.args.no_memory:
            print("peak_mb: " + (
                "torch.cuda.max_memory_allocated" if self.cuda else
                "peak RSS of a fresh process (model + Python + libraries); "
                "step_mb: peak RSS minus RSS before the first step"))

    def memory(self, cfg):
        cmd = [
            sys.executable,
            os.path.join(os.path.dirname(os.path.abspath(__file__)), "pretrain_step.py"),
            "--config", cfg, "--batch", str(self.batch), "--warmup", "0",
            "--steps", "1", "--device", self.args.device,
            "--precision", self.precision, "--threads", str(self.args.threads),
        ]
        for pair in self.args.set:
            cmd += ["--set", pair]
        out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
        peak = float(re.search(r"peak_memory_mb=([\d.]+)", out).group(1))
        delta = re.search(r"step_rss_delta_mb=([\d.]+)", out)
        return peak, float(delta.group(1)) if delta else math.nan

    # -------------------------------------------------------------- aape
    def aape(self):
        print("\n== aape: AaPE vs plain stem (same config, seed and masks; the "
              "student's stem computes every view from its visible patches)")
        for cfg in self.args.aape_configs:
            batch = self.tiny_batch if cfg == "tiny" else self.batch
            on, data = self.brain(cfg, batch, use_aape=True)
            off, _ = self.brain(cfg, batch, use_aape=False)
            print(f"{cfg}: {on.hparams.num_masks} masks per clip, mask ratio "
                  f"{on.hparams.mask_ratio}, student_stem_input="
                  f"{getattr(on.hparams, 'student_stem_input', 'view')}")
            times = self.interleave(
                {"aape": self.step_fn(on, data), "plain": self.step_fn(off, data)},
                reps=self.args.tiny_reps if cfg == "tiny" else self.args.reps,
            )
            step_ratio = bu.paired_ratio(times["aape"], times["plain"])
            floor_ratio = bu.min_ratio(times["aape"], times["plain"])
            plain_ms = bu.median(times["plain"])
            stem = self.stem_times(on, off, data)
            extra_ms = bu.median(stem["aape"]) - bu.median(stem["plain"])
            est = extra_ms / plain_ms
            print(f"{cfg} (batch {batch}): step aape {bu.median(times['aape']):.1f} ms, "
                  f"plain {plain_ms:.1f} ms, paired ratio {step_ratio:.3f} "
                  f"(extra {100 * (step_ratio - 1):+.1f}%, {len(times['aape'])} rounds; "
                  f"min/min {floor_ratio:.3f})")
            print(f"    stems only (student fwd+bwd + teacher fwd): aape "
                  f"{bu.median(stem['aape']):.1f} ms, plain "
                  f"{bu.median(stem['plain']):.1f} ms -> extra {extra_ms:.1f} ms "
                  f"= {100 * est:+.1f}% of the plain step")
            self.summary[f"aape_extra_step_{cfg}"] = step_ratio - 1
            self.summary[f"aape_extra_step_min_{cfg}"] = floor_ratio - 1
            self.summary[f"aape_extra_stem_est_{cfg}"] = est

    def stem_times(self, on, off, data):
        """Student stem (every view from its visible patches) fwd+bwd + teacher stem fwd."""
        wavs = data.to(self.args.device).sig[0]
        with torch.no_grad():
            feats = on.modules.compute_features(wavs)
        hp = vars(on.hparams)
        n_tokens, _ = unwrap_module(on.modules.student).num_tokens(feats.shape[1])
        visible, _ = multi_mask(feats.shape[0], n_tokens, int(hp["num_masks"]),
                                float(hp["mask_ratio"]),
                                generator=torch.Generator().manual_seed(0))
        visible = visible.to(self.args.device)

        def stem_fn(brain):
            student = unwrap_module(brain.modules.student)

            def run():
                with brain.training_ctx:
                    tokens = student.visible_tokens(feats, visible)
                    tokens.float().square().mean().backward()
                    with torch.no_grad():
                        brain.modules.teacher.module.embed(feats)
                brain.optimizer.zero_grad(set_to_none=True)
            return run

        return self.interleave(
            {"aape": stem_fn(on), "plain": stem_fn(off)},
            warmup=2,
            reps=self.args.micro_reps,
        )

    # ----------------------------------------------------------- teacher
    def teacher(self):
        cfg, batch = self.args.teacher_config, self.args.teacher_batch
        print(f"\n== teacher: full vs masked teacher input ({cfg}, batch {batch})")
        print(f"{'masks':>5s} {'masked_ms':>10s} {'full_ms':>9s} "
              f"{'step full/masked':>17s} {'(min)':>7s} "
              f"{'teacher full/masked':>20s} {'(min)':>7s}")
        for m in self.args.teacher_masks:
            masked, data = self.brain(cfg, batch, masks=m, teacher_input="masked")
            full, _ = self.brain(cfg, batch, masks=m, teacher_input="full")
            times = self.interleave(
                {"masked": self.step_fn(masked, data), "full": self.step_fn(full, data)},
                reps=self.args.teacher_reps,
            )
            teach = self.teacher_times(masked, full, data, m)
            step_ratio = bu.paired_ratio(times["full"], times["masked"])
            teach_ratio = bu.paired_ratio(teach["full"], teach["masked"])
            print(f"{m:5d} {bu.median(times['masked']):10.1f} "
                  f"{bu.median(times['full']):9.1f} {step_ratio:17.3f} "
                  f"{bu.min_ratio(times['full'], times['masked']):7.3f} "
                  f"{teach_ratio:20.3f} "
                  f"{bu.min_ratio(teach['full'], teach['masked']):7.3f}")
            self.summary[f"full_over_masked_step_m{m}"] = step_ratio
            self.summary[f"full_over_masked_teacher_m{m}"] = teach_ratio

    def teacher_times(self, masked, full, data, num_masks):
        wavs = data.to(self.args.device).sig[0]
        with torch.no_grad():
            feats = masked.modules.compute_features(wavs)
        N = math.prod(bu.student_encoder(masked).stem.grid(feats.shape[1]))
        g = torch.Generator().manual_seed(0)
        _, idx = multi_mask(feats.shape[0], N, num_masks,
                            masked.hparams.mask_ratio, generator=g)
        idx = idx.to(self.args.device)

        def fn(brain):
            def run():
                with brain.training_ctx:
                    brain.teacher_targets(feats, idx)
            return run

        return self.interleave({"masked": fn(masked), "full": fn(full)},
                               warmup=2, reps=self.args.micro_reps)

    # --------------------------------------------------------- inference
    def inference(self):
        batch, seconds = self.args.infer_batch, self.args.infer_seconds
        print(f"\n== inference: {seconds:g} s clips, batch {batch} "
              f"(log-mel + AudioViT.forward with chunking, eval, no grad, "
              f"{self.precision})")
        g = torch.Generator().manual_seed(0)
        wavs = (0.1 * torch.randn(batch, int(seconds * 16000), generator=g)).to(
            self.args.device
        )
        fns, chunks = {}, {}
        for cfg in self.args.infer_configs:
            brain, _ = self.brain(cfg, batch)
            encoder = bu.student_encoder(brain)
            feats_fn = brain.modules.compute_features
            chunks[cfg] = encoder.max_frames

            def run(encoder=encoder, feats_fn=feats_fn):
                encoder.eval()
                try:
                    with torch.inference_mode(), torch.autocast(
                        wavs.device.type, dtype=torch.bfloat16,
                        enabled=self.precision == "bf16",
                    ):
                        encoder(feats_fn(wavs))
                finally:
                    encoder.train()
            fns[cfg] = run
        times = self.interleave(fns)
        ref = self.args.infer_configs[0]
        print(f"{'config':8s} {'chunk':>6s} {'median_ms':>10s} {'clips/s':>9s} "
              f"{'x ' + ref + ' time':>12s} {'(min)':>7s}")
        for cfg in self.args.infer_configs:
            med = bu.median(times[cfg])
            ratio = bu.paired_ratio(times[cfg], times[ref])
            print(f"{cfg:8s} {chunks[cfg]:6d} {med:10.1f} "
                  f"{1000 * batch / med:9.2f} {ratio:12.2f} "
                  f"{bu.min_ratio(times[cfg], times[ref]):7.2f}")
            self.summary[f"infer_clips_per_s_{cfg}"] = 1000 * batch / med

    # -------------------------------------------------------------- data
    def data(self):
        from speechbrain.dataio.dataloader import make_dataloader

        from aasp_sb.data.pipeline import pretrain_dataset
        from aasp_sb.data.shards import LogMelShardDataset, build_logmel_shards

        args = self.args
        batch = self.tiny_batch
        brain, step_batch = self.brain("tiny", batch)
        crop_frames = int(brain.hparams.crop_frames)
        folder = bu.temp_dir("aasp_bench_data_")
        manifest = write_corpus(folder, args.data_clips, args.audio_sr,
                                args.audio_format)
        shards = os.path.join(folder, "shards")
        build_logmel_shards(manifest, shards, shard_size=32)
        shard_ds = LogMelShardDataset(shards, crop_frames=crop_frames, mode="random")
        shard_loader = torch.utils.data.DataLoader(
            shard_ds, batch_size=batch, shuffle=True, drop_last=True,
            num_workers=args.data_workers,
            persistent_workers=args.data_workers > 0,
        )
        seconds = bu.crop_samples(vars(brain.hparams)) / 16000
        audio_ds = pretrain_dataset(manifest, seconds, mode="random")
        audio_loader = make_dataloader(
            audio_ds, batch_size=batch, shuffle=True, drop_last=True,
            num_workers=args.data_workers,
            persistent_workers=args.data_workers > 0,
        )
        print(f"\n== data: {args.data_clips} synthetic {args.audio_format} clips "
              f"of 10 s at {args.audio_sr} Hz, crops of {crop_frames} frames, "
              f"batch {batch}, {args.data_workers} workers")
        nb = args.data_batches
        fns = {
            "shards": batches_fn(shard_loader, nb),
            "audio": batches_fn(audio_loader, nb),
            "tiny_step": self.step_fn(brain, step_batch),
        }
        # CPU time misses DataLoader workers: wall clock when there are any
        times = self.interleave(
            fns, clock="wall" if args.data_workers > 0 else None
        )
        rate = {
            "shards": [1000 * nb * batch / t for t in times["shards"]],
            "audio": [1000 * nb * batch / t for t in times["audio"]],
            "tiny_step": [1000 * batch / t for t in times["tiny_step"]],
        }
        for name, vals in rate.items():
            print(f"{name:10s} {bu.median(vals):10.1f} clips/s")
        shard_x = bu.median([s / t for s, t in zip(rate["shards"], rate["tiny_step"])])
        audio_x = bu.median([a / t for a, t in zip(rate["audio"], rate["tiny_step"])])
        print(f"shards / tiny step throughput: {shard_x:.1f}x (goal >= 5x: "
              f"{'met' if shard_x >= 5 else 'NOT met'}); audio files / tiny "
              f"step: {audio_x:.1f}x")
        self.summary["shards_over_tiny_step"] = shard_x
        self.summary["audio_over_tiny_step"] = audio_x

    def run(self):
        print(f"device={bu.device_name(self.args.device)} precision={self.precision} "
              f"compile={self.args.compile} clock={self.args.clock} "
              f"sections={' '.join(self.args.sections)}")
        for section in SECTIONS:
            if section in self.args.sections:
                getattr(self, section)()
        print("summary " + " ".join(
            f"{k}={v:.4g}" for k, v in self.summary.items()
        ))
        return self.summary


def batches_fn(loader, num_batches):
    """A function that pulls ``num_batches`` batches from an endless loader."""
    state = {"it": iter(loader)}

    def run():
        for _ in range(num_batches):
            try:
                next(state["it"])
            except StopIteration:
                state["it"] = iter(loader)
                next(state["it"])
    return run


def write_corpus(folder, num_clips, sample_rate, fmt, seconds=10.0):
    """Writes ``num_clips`` noisy, modulated tones and their manifest."""
    import soundfile as sf

    from aasp_sb.data.folder import write_csv

    rng = np.random.default_rng(0)
    audio = os.path.join(folder, "audio")
    os.makedirs(audio, exist_ok=True)
    t = np.arange(int(seconds * sample_rate)) / sample_rate
    rows = []
    for i in range(num_clips):
        f0, fm = rng.uniform(200, 4000), rng.uniform(2, 40)
        wav = 0.3 * np.sin(2 * np.pi * f0 * t) * (1 + np.sin(2 * np.pi * fm * t)) / 2
        wav = (wav + 0.05 * rng.standard_normal(t.shape)).astype("float32")
        path = os.path.join(audio, f"clip{i:04d}.{fmt}")
        sf.write(path, wav, sample_rate)
        rows.append({"ID": f"clip{i:04d}", "duration": seconds, "wav": path})
    manifest = os.path.join(folder, "manifest.csv")
    write_csv(manifest, rows, ["ID", "duration", "wav"])
    return manifest


def main(argv=None):
    args = bu.setup(parse_args(argv))
    return Bench(args).run()


if __name__ == "__main__":
    main()
