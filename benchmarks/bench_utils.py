"""Shared helpers of the benchmark scripts (not part of the package).

Everything here builds the *real* training objects: the modules come from
``hparams/aasp_<config>.yaml`` (HyperPyYAML with overrides) and one step is
:meth:`aasp_sb.brains.pretrain.AaSPBrain.fit_batch` -- forward (features,
stem, masking, student, predictor, teacher targets), loss, backward, and
``optimizers_step`` (clipping over all groups, AdamW, lr schedule, EMA
update of the teacher) -- so a benchmark times exactly what training runs.

Memory
------
CUDA: ``torch.cuda.max_memory_allocated`` since the peak counters were reset
right after the model was built (so it covers parameters, gradients,
optimiser state and activations of the steps).

CPU: PyTorch keeps no peak counter for host memory, and ``tracemalloc`` does
not see its allocator. We report the process's peak resident set size
(``VmHWM`` from ``/proc/self/status`` on Linux, ``ru_maxrss`` elsewhere;
includes Python, libraries and the built model) and ``step_rss_delta`` =
that peak minus the RSS measured just before the first step (what the steps
add on top of the built model: gradients, optimiser state, activations,
allocator caching). ``ru_maxrss`` is avoided on Linux because a child
started with fork + exec inherits its parent's peak. Both numbers describe
one model per process, which is why ``compare.py`` measures memory in fresh
subprocesses.
"""

import atexit
import os
import pathlib
import resource
import shutil
import statistics
import sys
import tempfile
import time

import speechbrain as sb
import torch
from hyperpyyaml import load_hyperpyyaml
from speechbrain.dataio.batch import PaddedBatch

ROOT = pathlib.Path(__file__).resolve().parents[1]
CONFIGS = ("tiny", "small", "base")
_TMP_DIRS = []


def _cleanup():
    for path in _TMP_DIRS:
        shutil.rmtree(path, ignore_errors=True)


atexit.register(_cleanup)


def temp_dir(prefix="aasp_bench_"):
    """A temporary folder removed when the process exits."""
    path = tempfile.mkdtemp(prefix=prefix)
    _TMP_DIRS.append(path)
    return path


def set_threads(num_threads):
    """Sets torch's intra-op threads when ``num_threads`` is given (> 0)."""
    if num_threads and num_threads > 0:
        torch.set_num_threads(int(num_threads))


def setup(args):
    """Applies ``--threads`` and resolves ``--clock`` / ``--precision`` in place.

    On CPU the defaults are one torch thread and the CPU-time clock: on a
    shared machine, a 2-thread step slowed 10x and more whenever another
    process took a core, while a 1-thread step's CPU time stayed within a
    few percent. On CUDA: torch's threads and the wall clock.
    """
    cuda = args.device.startswith("cuda")
    if args.threads is None:
        args.threads = 0 if cuda else 1
    set_threads(args.threads)
    if args.clock is None:
        args.clock = "wall" if cuda else "cpu"
    if args.precision is None:
        args.precision = "bf16" if cuda else "fp32"
    return args


def hparams_path(config):
    """Path of ``hparams/aasp_<config>.yaml``."""
    if config not in CONFIGS:
        raise ValueError(f"config must be one of {CONFIGS}, got {config!r}")
    return ROOT / "hparams" / f"aasp_{config}.yaml"


def load_hparams(config, overrides=None):
    """Loads a pre-training YAML with a dummy data folder and a temp output folder.

    Arguments
    ---------
    config : str
        ``tiny``, ``small`` or ``base``.
    overrides : dict, optional
        Top-level keys to override (as on the recipe's command line).

    Returns
    -------
    dict
        The loaded hyper-parameters (modules built).
    """
    out = temp_dir()
    ov = {
        "data_folder": os.path.join(out, "no_data"),
        "output_folder": out,
        "log_interval": 0,  # no metrics.jsonl writes inside timed steps
    }
    ov.update(overrides or {})
    with open(hparams_path(config), encoding="utf-8") as f:
        return load_hyperpyyaml(f, ov)


def objective_overrides(use_aape=None, masks=None, teacher_input=None):
    """YAML overrides for the common benchmark switches.

    One mask leaves no positive for the multi-mask contrastive term, so
    ``masks=1`` also sets ``contrastive_weight: 0`` (as a run would have to).
    """
    ov = {}
    if use_aape is not None:
        ov["use_aape"] = bool(use_aape)
    if masks is not None:
        ov["num_masks"] = int(masks)
        if int(masks) < 2:
            ov["contrastive_weight"] = 0.0
    if teacher_input is not None:
        ov["teacher_input"] = teacher_input
    return ov


def compile_hot_modules(brain):
    """``torch.compile`` the modules the step really calls, in place.

    SpeechBrain's ``--compile`` wraps each entry of ``modules`` and compiles
    its ``forward``; with the YAMLs' ``MaskedStudent`` and ``MaskedTeacher``
    that covers the student and the teacher's target pass. The benchmark
    compiles the transformer blocks, the stems and the predictor in place
    (``nn.Module.compile``) instead: smaller graphs (fewer recompilations
    when the mask count or crop changes between runs), the same hot path,
    and it also works for a YAML that still uses a plain ``EMATeacher``.
    """
    for vit in (student_encoder(brain), brain.modules.teacher.module):
        for blk in vit.blocks:
            blk.compile()
        vit.stem.compile()
    brain.hparams.predictor.compile()


def student_encoder(brain):
    """The student :class:`AudioViT` (the YAML's ``encoder`` key)."""
    return brain.hparams.encoder


def build_brain(
    config,
    overrides=None,
    device="cpu",
    precision="fp32",
    compile=False,
    batch_size=None,
):
    """An :class:`AaSPBrain` ready to run training steps (no data, no checkpoints).

    Does what ``Brain.fit`` does before the first batch: ``on_fit_start``
    (config check, optimiser with weight-decay groups, lr schedule, EMA
    schedule), ``on_stage_start(TRAIN)``, ``modules.train()``.

    Arguments
    ---------
    config : str
        ``tiny``, ``small`` or ``base``.
    overrides : dict, optional
        YAML overrides.
    device : str
        ``cpu`` or ``cuda[:i]``.
    precision : str
        ``fp32`` or ``bf16`` (autocast, as the recipe does on CUDA).
    compile : bool
        :func:`compile_hot_modules`.
    batch_size : int, optional
        Sets the lr scaling as the recipe does (``base_lr * batch / 256``).

    Returns
    -------
    AaSPBrain
    """
    from aasp_sb.brains.pretrain import AaSPBrain

    hp = load_hparams(config, overrides)
    batch = int(batch_size or hp["batch_size"])
    hp["lr"] = hp["base_lr"] * batch * hp["grad_accumulation_factor"] / 256
    hp["opt_class"].keywords["lr"] = hp["lr"]
    brain = AaSPBrain(
        modules=hp["modules"],
        opt_class=hp["opt_class"],
        hparams=hp,
        run_opts={"device": device, "precision": precision},
        checkpointer=None,
    )
    brain.steps_per_epoch = 10_000  # lr / EMA schedules need a length
    brain.on_fit_start()
    if compile:
        compile_hot_modules(brain)
    hp["epoch_counter"].current = 1
    brain.on_stage_start(sb.Stage.TRAIN, 1)
    brain.modules.train()
    brain.modules.teacher.train(False)
    return brain


def crop_samples(hp):
    """Waveform samples that give exactly ``crop_frames`` log-mel frames."""
    hop = hp["compute_features"].logmel.hop_length
    return (int(hp["crop_frames"]) - 1) * hop


def random_batch(batch_size, num_samples, seed=0):
    """A SpeechBrain ``PaddedBatch`` of random waveforms (key ``sig``)."""
    g = torch.Generator().manual_seed(seed)
    items = [
        {"id": f"clip{i}", "sig": 0.1 * torch.randn(num_samples, generator=g)}
        for i in range(batch_size)
    ]
    return PaddedBatch(items)


def synchronize(device):
    """Waits for queued CUDA work (no-op on CPU)."""
    if str(device).startswith("cuda"):
        torch.cuda.synchronize()


def train_step(brain, batch):
    """One full pre-training step (what ``Brain.fit`` runs per batch)."""
    brain.step += 1
    loss = brain.fit_batch(batch)
    if not torch.isfinite(loss):
        raise RuntimeError(f"non-finite loss {loss} in the benchmark step")
    return loss


CLOCKS = {"wall": time.perf_counter, "cpu": time.process_time}


def timed(fn, device, clock="wall"):
    """Runs ``fn()`` and returns its duration in ms.

    ``clock="wall"``: elapsed time, CUDA-synchronised. ``clock="cpu"``: CPU
    time of this process (all its threads; DataLoader workers excluded),
    which other processes on a shared machine barely disturb -- use it with
    one torch thread, since idle OpenMP threads spin and bill CPU time when
    the cores are oversubscribed.
    """
    now = CLOCKS[clock]
    synchronize(device)
    start = now()
    fn()
    synchronize(device)
    return 1000.0 * (now() - start)


def rss_mb():
    """Current resident set size in MB (Linux ``/proc``; ru_maxrss elsewhere)."""
    try:
        with open("/proc/self/statm", encoding="ascii") as f:
            pages = int(f.read().split()[1])
        return pages * os.sysconf("SC_PAGE_SIZE") / 2**20
    except (OSError, ValueError):
        return peak_rss_mb()


def _proc_status_mb(field):
    with open("/proc/self/status", encoding="ascii") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024  # kB
    raise KeyError(field)


def peak_rss_mb():
    """Peak resident set size of this process in MB.

    Linux: ``VmHWM`` of ``/proc/self/status`` (the high-water mark of this
    address space; unlike ``ru_maxrss`` it does not inherit the parent's
    peak across fork + exec, and :func:`reset_peak_rss` can reset it).
    Elsewhere: ``ru_maxrss``.
    """
    try:
        return _proc_status_mb("VmHWM")
    except (OSError, KeyError, ValueError):
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return peak / 2**20 if sys.platform == "darwin" else peak / 1024


def reset_peak_rss():
    """Resets ``VmHWM`` to the current RSS (Linux >= 4.0); False if impossible."""
    try:
        with open("/proc/self/clear_refs", "w", encoding="ascii") as f:
            f.write("5")
        return True
    except OSError:
        return False


def median(values):
    """Median of a non-empty list."""
    return float(statistics.median(values))


def interleaved(fns, warmup, reps, device, clock="wall"):
    """Times several step functions in turns (ABAB...) to share machine noise.

    Arguments
    ---------
    fns : dict
        ``{name: fn}``; each ``fn()`` runs one step.
    warmup : int
        Untimed calls of each function first.
    reps : int
        Timed rounds; in each round every function runs once (order rotated).
    device : str
        For CUDA synchronisation.
    clock : str
        ``"wall"`` or ``"cpu"`` (see :func:`timed`).

    Returns
    -------
    dict
        ``{name: [ms, ...]}``, one entry per round.
    """
    names = list(fns)
    for _ in range(warmup):
        for name in names:
            fns[name]()
    times = {name: [] for name in names}
    for r in range(reps):
        order = names[r % len(names) :] + names[: r % len(names)]
        for name in order:
            times[name].append(timed(fns[name], device, clock))
    return times


def paired_ratio(times_a, times_b):
    """Median of the per-round ratios ``a / b`` (robust to drifting load)."""
    return median([a / b for a, b in zip(times_a, times_b)])


def device_name(device):
    """A short description of the device for the printed headers."""
    if str(device).startswith("cuda"):
        return torch.cuda.get_device_name(torch.device(device))
    return f"CPU ({os.cpu_count()} cores visible, {torch.get_num_threads()} torch threads)"


def parse_yaml_overrides(pairs):
    """``["embed_dim=32", "use_aape=False"]`` -> ``{"embed_dim": 32, "use_aape": False}``."""
    import yaml

    out = {}
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ValueError(f"--set expects key=value, got {pair!r}")
        out[key.strip()] = yaml.safe_load(value)
    return out


def add_common_args(parser):
    """Device / precision / compile / threads / YAML-override flags."""
    parser.add_argument("--device", default="cpu", help="cpu or cuda[:i]")
    parser.add_argument("--precision", choices=("fp32", "bf16"), default=None,
                        help="default: bf16 on CUDA, fp32 on CPU")
    parser.add_argument("--compile", action="store_true",
                        help="torch.compile the blocks, stems and predictor")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch intra-op threads (default: 1 on CPU, "
                             "torch's default on CUDA; 0: torch's default)")
    parser.add_argument("--clock", choices=tuple(CLOCKS), default=None,
                        help="wall or process CPU time (default: cpu on "
                             "CPU, wall on CUDA)")
    parser.add_argument("--set", action="append", default=[],
                        metavar="KEY=VALUE",
                        help="extra YAML override for every model built "
                             "(repeatable), e.g. --set depth=2")




def yaml_value(config, key):
    """A top-level plain scalar of the config's YAML, read without building modules.

    Returns None when the key is absent or not a plain scalar (e.g. a tag).
    """
    import re

    import yaml

    text = hparams_path(config).read_text(encoding="utf-8")
    match = re.search(rf"^{re.escape(key)}:[ \t]*([^#\n]*)", text, flags=re.M)
    if match is None:
        return None
    raw = match.group(1).strip()
    if not raw or raw.startswith("!"):
        return None
    return yaml.safe_load(raw)


def yaml_int(config, key):
    """A top-level integer of the config's YAML (see :func:`yaml_value`)."""
    value = yaml_value(config, key)
    if not isinstance(value, int):
        raise KeyError(f"no integer '{key}' in {hparams_path(config)}")
    return value


def min_ratio(times_a, times_b):
    """``min(a) / min(b)``: the noise-floor ratio (load only ever adds time)."""
    return min(times_a) / min(times_b)
