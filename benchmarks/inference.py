"""Embedding throughput: our encoder vs a textbook M2D-style chunked ViT, in one run.

The reference encoder is written here the way M2D's runtime encodes long
inputs (``portable_m2d.py`` / ``RuntimeM2D.encode_lms``): the log-mel is cut
into ``max_frames`` chunks, the last, shorter chunk is encoded at its own
length with trimmed position embeddings, and each chunk runs through
timm-style pre-LN blocks (fused qkv projection, LayerNorm eps 1e-6, SDPA)
without any attention mask. It uses our weights (copied into its layout) and
has no CLS token (ours has none; M2D's adds one token per chunk, which would
only make the reference slower). Both encoders get the same log-mel; the
front end is timed separately.

Sections:

- ``encoder``: clips/s on 10 s clips (``--seconds``), base and tiny, ours with
  the plain stem vs the reference (outputs checked equal first), and our AaPE
  model's clips/s against the same reference;
- ``cli``: end to end ``python -m aasp_sb.embed`` (decode, log-mel, encode,
  write) on a folder of wav clips of mixed lengths, clips/s.

Usage::

    python benchmarks/inference.py                       # both sections, CPU
    python benchmarks/inference.py --configs tiny --reps 3
    python benchmarks/inference.py --device cuda --precision bf16

Last line: ``summary key=value ...``.
"""

import argparse
import math
import os
import subprocess
import sys
import time

import bench_utils as bu
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

SECTIONS = ("encoder", "cli")


class TextbookBlock(nn.Module):
    """timm's ViT block: LN -> fused qkv -> SDPA -> proj, LN -> MLP (GELU)."""

    def __init__(self, dim, heads, hidden):
        super().__init__()
        self.heads = heads
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x):
        B, N, D = x.shape
        qkv = self.qkv(self.norm1(x)).view(B, N, 3, self.heads, D // self.heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4)
        a = F.scaled_dot_product_attention(q, k, v)
        x = x + self.proj(a.transpose(1, 2).reshape(B, N, D))
        return x + self.fc2(F.gelu(self.fc1(self.norm2(x))))


class TextbookChunkedViT(nn.Module):
    """M2D-runtime-style chunked encoder built from one of our ``AudioViT`` s."""

    def __init__(self, ours):
        super().__init__()
        stem = ours.stem
        self.pf, self.pt = stem.patch_size
        self.unit = ours.max_frames
        self.patch = nn.Conv2d(1, ours.embed_dim, stem.patch_size, stride=stem.patch_size)
        self.patch.load_state_dict(stem.proj.state_dict())
        self.register_buffer("pos", ours.pos_embed.clone())
        D = ours.embed_dim
        self.blocks = nn.ModuleList()
        for blk in ours.blocks:
            hidden = blk.mlp.fc1.out_features if hasattr(blk.mlp, "fc1") else 4 * D
            tb = TextbookBlock(D, blk.attn.num_heads, hidden)
            copy_block(blk, tb)
            self.blocks.append(tb)
        self.norm = nn.LayerNorm(D, eps=1e-6)
        self.norm.load_state_dict(ours.norm.state_dict())

    def forward(self, lms):  # [B, T, F] -> [B, Tp, Fp * D]
        x = lms.transpose(1, 2).unsqueeze(1)  # [B, 1, F, T]
        pad = (-x.shape[-1]) % self.pt
        x = F.pad(x, (0, pad))
        Fp = x.shape[2] // self.pf
        Tmax = self.unit // self.pt
        out = []
        for i in range(math.ceil(x.shape[-1] / self.unit)):
            t = self.patch(x[..., i * self.unit : (i + 1) * self.unit])
            Tc = t.shape[-1]
            t = t.flatten(2).transpose(1, 2)
            pos = self.pos.view(Fp, Tmax, -1)[:, :Tc].reshape(Fp * Tc, -1)
            t = t + pos
            for blk in self.blocks:
                t = blk(t)
            t = self.norm(t)
            B, _, D = t.shape
            out.append(t.view(B, Fp, Tc, D).permute(0, 2, 1, 3).reshape(B, Tc, Fp * D))
        return torch.cat(out, dim=1)


def copy_block(ours, tb):
    """Copies one of our pre-LN blocks into the textbook layout (q and kv fused)."""
    with torch.no_grad():
        tb.norm1.load_state_dict(ours.norm1.state_dict())
        tb.norm2.load_state_dict(ours.norm2.state_dict())
        tb.qkv.weight.copy_(torch.cat([ours.attn.q.weight, ours.attn.kv.weight]))
        tb.qkv.bias.copy_(torch.cat([ours.attn.q.bias, ours.attn.kv.bias]))
        tb.proj.load_state_dict(ours.attn.proj.state_dict())
        tb.fc1.load_state_dict(ours.mlp.fc1.state_dict())
        tb.fc2.load_state_dict(ours.mlp.fc2.state_dict())


def build_encoder(config, use_aape, extra=None):
    hp = bu.load_hparams(config, {"crop_frames": 608, **(extra or {}), "use_aape": use_aape})
    return hp["encoder"].eval(), hp["compute_features"].eval()


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sections", nargs="+", choices=SECTIONS, default=list(SECTIONS))
    p.add_argument("--configs", nargs="+", choices=bu.CONFIGS, default=["base", "tiny"])
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--seconds", type=float, default=10.0)
    p.add_argument("--reps", type=int, default=5)
    p.add_argument("--warmup", type=int, default=1, help="untimed rounds")
    p.add_argument("--cli-clips", type=int, default=48)
    p.add_argument("--cli-config", choices=bu.CONFIGS, default="tiny")
    p.add_argument("--cli-max-seconds", type=float, default=10.0,
                   help="longest clip of the CLI corpus (lengths drawn from 1 s to this)")
    bu.add_common_args(p)
    return p.parse_args(argv)


def encoder_section(args, summary):
    frames = int(args.seconds * 100) + 1
    print(f"\n== encoder: {args.seconds:g} s clips ({frames} frames), batch {args.batch}, "
          "ours vs the M2D-style textbook chunked encoder (same weights)")
    autocast = args.precision == "bf16"
    for cfg in args.configs:
        torch.manual_seed(0)
        extra = bu.parse_yaml_overrides(args.set)
        plain, _ = build_encoder(cfg, False, extra)
        aape, _ = build_encoder(cfg, True, extra)
        plain, aape = plain.to(args.device), aape.to(args.device)
        ref = TextbookChunkedViT(plain).to(args.device).eval()
        lms = torch.randn(args.batch, frames, 80, device=args.device)
        with torch.inference_mode():
            a = plain.frame_features(plain(lms))
            b = ref(lms)
        err = (a - b).abs().max().item()
        print(f"{cfg}: max |ours - textbook| = {err:.2e} (same weights)")
        if err > 1e-3:
            raise SystemExit(f"{cfg}: outputs differ by {err}: the reference is not like for like")

        def run(fn, lms=lms):
            def step():
                with torch.inference_mode(), torch.autocast(
                    args.device.split(":")[0], dtype=torch.bfloat16, enabled=autocast
                ):
                    fn(lms)
            return step

        times = bu.interleaved(
            {
                "ours": run(lambda x, e=plain: e.frame_features(e(x))),
                "textbook": run(ref),
                "ours_aape": run(lambda x, e=aape: e.frame_features(e(x))),
            },
            warmup=args.warmup, reps=args.reps, device=args.device, clock=args.clock,
        )
        per_s = {k: 1000.0 * args.batch / bu.median(v) for k, v in times.items()}
        r_plain = 1.0 / bu.paired_ratio(times["ours"], times["textbook"])
        r_aape = 1.0 / bu.paired_ratio(times["ours_aape"], times["textbook"])
        print(f"{cfg}: clips/s ours {per_s['ours']:.2f}, textbook {per_s['textbook']:.2f}, "
              f"ours AaPE {per_s['ours_aape']:.2f}; ours/textbook clips/s {r_plain:.3f} "
              f"(AaPE model {r_aape:.3f}), {args.reps} rounds")
        summary[f"clips_per_s_ratio_{cfg}"] = r_plain
        summary[f"clips_per_s_ratio_aape_{cfg}"] = r_aape
        summary[f"clips_per_s_ours_{cfg}"] = per_s["ours"]


def write_clips(folder, n, seed=0, longest=10.0):
    import soundfile as sf

    rng = np.random.default_rng(seed)
    lines = ["ID,duration,wav"]
    for i in range(n):
        seconds = float(rng.uniform(1.0, max(1.0, longest)))
        wav = rng.standard_normal(int(seconds * 16000)).astype(np.float32) * 0.1
        path = os.path.join(folder, f"clip{i:04d}.wav")
        sf.write(path, wav, 16000)
        lines.append(f"c{i},{seconds:.3f},{path}")
    csv = os.path.join(folder, "clips.csv")
    with open(csv, "w", encoding="utf-8") as f:
        f.write("\n".join(lines) + "\n")
    return csv


def cli_section(args, summary):
    print(f"\n== cli: python -m aasp_sb.embed --random-init on {args.cli_clips} wav clips "
          f"of 1-10 s ({args.cli_config})")
    folder = bu.temp_dir("aasp_bench_cli_")
    csv = write_clips(folder, args.cli_clips, longest=args.cli_max_seconds)
    out = os.path.join(folder, "emb.npy")
    cmd = [sys.executable, "-m", "aasp_sb.embed", "--hparams", bu.hparams_path(args.cli_config),
           "--random-init", "--csv", csv, "--output", out, "--device", args.device,
           "--no-progress"]
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads or 1))
    start = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        print(proc.stderr[-2000:])
        raise SystemExit(f"embedding CLI failed (rc {proc.returncode})")
    rate = args.cli_clips / wall
    print(f"{args.cli_config}: {rate:.2f} clips/s end to end ({wall:.1f} s wall, "
          "process start and model build included)")
    summary[f"cli_clips_per_s_{args.cli_config}"] = rate


def main(argv=None):
    args = parse_args(argv)
    bu.setup(args)
    summary = {}
    if "encoder" in args.sections:
        encoder_section(args, summary)
    if "cli" in args.sections:
        cli_section(args, summary)
    print("summary " + " ".join(f"{k}={v:.4g}" for k, v in summary.items()))


if __name__ == "__main__":
    main()
