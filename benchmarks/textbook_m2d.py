#!/usr/bin/env python3
"""A textbook MAE/M2D pre-training step next to ours, timed in the same process.

The textbook step is what one writes from the M2D paper with stock PyTorch
modules: log-mel (torchaudio), ``Conv2d`` patch embedding, fixed 2D sin-cos
positions, MAE random masking (argsort of noise, ``torch.gather``), a ViT of
``nn.TransformerEncoderLayer(norm_first=True, batch_first=True)``, an M2D
predictor (Linear to 512-d, mask tokens scattered back into the full
sequence, *self-attention* ``TransformerEncoderLayer`` blocks over all
tokens, Linear back to the encoder width), an EMA teacher (deep copy of
stem + encoder) encoding the masked tokens only, layer-normalised targets,
``2 - 2 cos`` loss, AdamW, gradient clipping and a per-parameter EMA loop.
One mask per clip, no contrastive term.

Ours: :class:`AaSPBrain` built from ``hparams/aasp_base.yaml`` with
``use_aape: False``, ``num_masks: 1`` (hence ``contrastive_weight: 0``) and
``teacher_input: masked``: the same ViT-B (768/12/12), 80 x 608 input, mask
ratio 0.7 and a 512-d predictor of the YAML's depth (4; M2D uses 8: see
``--pred-depth``), but a cross-attention predictor whose masked queries
attend only to the visible tokens.

Usage::

    python benchmarks/textbook_m2d.py                       # CPU, batch 2
    python benchmarks/textbook_m2d.py --device cuda --batch 128 --reps 20

Prints both medians (and CUDA peak memory of each) and, as the last line,
``ratio_ours_over_textbook=<float>`` (median of per-round ratios; < 1 means
our step is faster).
"""

import argparse
import copy
import math

import bench_utils as bu
import torch
import torch.nn.functional as F
import torchaudio
from torch import nn


def sincos_2d(dim, grid_f, grid_t):
    """MAE's fixed 2D sin-cos table ``[grid_f * grid_t, dim]`` (frequency-major)."""
    def one_d(d, pos):
        omega = 1.0 / 10000 ** (torch.arange(d // 2, dtype=torch.float64) / (d / 2))
        out = pos.double()[:, None] * omega[None]
        return torch.cat([out.sin(), out.cos()], dim=1)

    f = torch.arange(grid_f).repeat_interleave(grid_t)
    t = torch.arange(grid_t).repeat(grid_f)
    return torch.cat([one_d(dim // 2, f), one_d(dim // 2, t)], dim=1).float()


def vit_layers(dim, depth, heads, mlp_ratio=4.0):
    layer = nn.TransformerEncoderLayer(
        dim, heads, int(dim * mlp_ratio), dropout=0.0, activation="gelu",
        batch_first=True, norm_first=True,
    )
    return nn.TransformerEncoder(layer, depth, enable_nested_tensor=False)


class TextbookEncoder(nn.Module):
    """Patch embedding + positions + ViT (what the teacher copies)."""

    def __init__(self, n_mels, frames, patch, dim, depth, heads):
        super().__init__()
        self.patch = nn.Conv2d(1, dim, patch, patch)
        self.grid = (n_mels // patch, frames // patch)
        self.register_buffer("pos", sincos_2d(dim, *self.grid)[None])
        self.blocks = vit_layers(dim, depth, heads)
        self.norm = nn.LayerNorm(dim)

    def tokens(self, spec):
        """``[B, T, F]`` log-mel -> ``[B, N, D]`` tokens with positions."""
        x = self.patch(spec.transpose(1, 2).unsqueeze(1))  # [B, D, F/p, T/p]
        return x.flatten(2).transpose(1, 2) + self.pos

    def encode(self, x):
        return self.norm(self.blocks(x))


def gather(x, idx):
    return torch.gather(x, 1, idx.unsqueeze(-1).expand(-1, -1, x.shape[-1]))


class TextbookM2D(nn.Module):
    """MAE/M2D-style student + predictor + EMA teacher, one mask per clip."""

    def __init__(self, n_mels=80, frames=608, patch=16, dim=768, depth=12,
                 heads=12, pred_dim=512, pred_depth=4, pred_heads=16,
                 mask_ratio=0.7):
        super().__init__()
        self.melspec = torchaudio.transforms.MelSpectrogram(
            16000, n_fft=400, win_length=400, hop_length=160, n_mels=n_mels,
            f_min=50.0, f_max=8000.0,
        )
        self.encoder = TextbookEncoder(n_mels, frames, patch, dim, depth, heads)
        self.pred_embed = nn.Linear(dim, pred_dim)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, pred_dim))
        nn.init.normal_(self.mask_token, std=0.02)
        self.register_buffer(
            "pred_pos", sincos_2d(pred_dim, *self.encoder.grid)[None]
        )
        self.predictor = vit_layers(pred_dim, pred_depth, pred_heads)
        self.pred_norm = nn.LayerNorm(pred_dim)
        self.pred_head = nn.Linear(pred_dim, dim)
        self.teacher = copy.deepcopy(self.encoder)
        for p in self.teacher.parameters():
            p.requires_grad_(False)
        self.mask_ratio = mask_ratio

    def student_parameters(self):
        return [p for n, p in self.named_parameters()
                if not n.startswith("teacher.") and p.requires_grad]

    def spectrogram(self, wav):
        with torch.no_grad(), torch.autocast(wav.device.type, enabled=False):
            spec = self.melspec(wav.float())
        return ((spec + 1e-7).log().transpose(1, 2) + 7.1) / 4.2

    def forward(self, wav):
        spec = self.spectrogram(wav)
        x = self.encoder.tokens(spec)
        B, N, D = x.shape
        keep = int(N * (1 - self.mask_ratio))
        ids_shuffle = torch.rand(B, N, device=x.device).argsort(dim=1)
        ids_restore = ids_shuffle.argsort(dim=1)
        ids_keep, ids_mask = ids_shuffle[:, :keep], ids_shuffle[:, keep:]
        latent = self.encoder.encode(gather(x, ids_keep))
        # M2D predictor: mask tokens back in place, self-attention over all N
        y = self.pred_embed(latent)
        y = torch.cat([y, self.mask_token.expand(B, N - keep, -1)], dim=1)
        y = gather(y, ids_restore) + self.pred_pos
        y = self.pred_head(self.pred_norm(self.predictor(y)))
        pred = gather(y, ids_mask)
        with torch.no_grad():
            self.teacher.eval()
            t = self.teacher.tokens(spec)
            target = self.teacher.encode(gather(t, ids_mask))
            target = F.layer_norm(target.float(), (D,))
        p = F.normalize(pred.float(), dim=-1)
        return (2 - 2 * (p * F.normalize(target, dim=-1)).sum(-1)).mean()

    @torch.no_grad()
    def ema(self, decay):
        for t, s in zip(self.teacher.parameters(), self.encoder.parameters()):
            t.mul_(decay).add_(s.detach(), alpha=1 - decay)


def textbook_step_fn(model, optimizer, wav, device, precision, max_norm=3.0):
    dtype = torch.bfloat16 if precision == "bf16" else torch.float32
    params = model.student_parameters()

    def step():
        with torch.autocast(torch.device(device).type, dtype=dtype,
                            enabled=precision == "bf16"):
            loss = model(wav)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, max_norm)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        model.ema(0.9995)
        if not math.isfinite(loss.item()):
            raise RuntimeError("non-finite textbook loss")
    return step


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", choices=bu.CONFIGS, default="base",
                   help="YAML both models take their sizes from")
    p.add_argument("--batch", type=int, default=None,
                   help="clips per step (default 2 on CPU, 64 on CUDA)")
    p.add_argument("--pred-depth", type=int, default=None,
                   help="textbook predictor depth (default: the YAML's "
                        "predictor_depth; M2D uses 8)")
    p.add_argument("--reps", type=int, default=4, help="timed rounds")
    p.add_argument("--warmup", type=int, default=1, help="untimed rounds")
    bu.add_common_args(p)
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    bu.setup(args)
    cuda = args.device.startswith("cuda")
    precision = args.precision
    batch = args.batch or (64 if cuda else 2)
    overrides = bu.parse_yaml_overrides(args.set)
    overrides.update(bu.objective_overrides(use_aape=False, masks=1,
                                            teacher_input="masked"))
    torch.manual_seed(0)
    ours = bu.build_brain(args.config, overrides, device=args.device,
                          precision=precision, compile=args.compile,
                          batch_size=batch)
    hp = vars(ours.hparams)
    pred_depth = args.pred_depth or int(hp["predictor_depth"])
    model = TextbookM2D(
        n_mels=int(hp["n_mels"]), frames=int(hp["crop_frames"]),
        patch=int(hp["patch_size"]), dim=int(hp["embed_dim"]),
        depth=int(hp["depth"]), heads=int(hp["num_heads"]),
        pred_dim=int(hp["predictor_dim"]), pred_depth=pred_depth,
        pred_heads=int(hp["predictor_heads"]), mask_ratio=float(hp["mask_ratio"]),
    ).to(args.device)
    if args.compile:
        for layers in (model.encoder.blocks, model.teacher.blocks, model.predictor):
            layers.compile()
    optimizer = torch.optim.AdamW(model.student_parameters(), lr=hp["lr"],
                                  betas=(0.9, 0.95), weight_decay=0.05)
    data = bu.random_batch(batch, bu.crop_samples(hp))
    wav = data.sig[0].to(args.device)
    # frames: the textbook front end gives crop_frames frames as ours does
    fns = {
        "ours": lambda: bu.train_step(ours, data),
        "textbook": textbook_step_fn(model, optimizer, wav, args.device, precision),
    }
    n_ours = sum(p.numel() for g in ours.optimizer.param_groups for p in g["params"])
    n_text = sum(p.numel() for p in model.student_parameters())
    print(f"config={args.config} (use_aape=False, masks=1) batch={batch} "
          f"precision={precision} compile={args.compile} clock={args.clock} "
          f"device={bu.device_name(args.device)}")
    print(f"trainable params: ours {n_ours / 1e6:.2f}M (predictor depth "
          f"{hp['predictor_depth']}, cross-attention), textbook "
          f"{n_text / 1e6:.2f}M (predictor depth {pred_depth}, self-attention)")
    peaks = {}
    if cuda:
        for name, fn in fns.items():  # per-model peak memory, one step each
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            fn()
            torch.cuda.synchronize()
            peaks[name] = torch.cuda.max_memory_allocated() / 2**20
    times = bu.interleaved(fns, args.warmup, max(1, args.reps), args.device,
                           args.clock)
    for name in fns:
        extra = f", peak {peaks[name]:.0f} MB" if name in peaks else ""
        print(f"{name:9s} median {bu.median(times[name]):.1f} ms "
              f"({1000 * batch / bu.median(times[name]):.2f} clips/s{extra}); "
              "rounds " + ",".join(f"{t:.0f}" for t in times[name]))
    ratio = bu.paired_ratio(times["ours"], times["textbook"])
    print(f"ratio_ours_over_textbook={ratio:.4f}")
    return ratio


if __name__ == "__main__":
    main()
