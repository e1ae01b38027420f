"""Tiny fake datasets in the official layouts, for tests of aasp_sb.data.tasks.

Every builder writes short (50 ms) noise clips with soundfile at the
dataset's native sample rate, plus the metadata / split files exactly as the
dataset distributes them, and returns a dict describing what it wrote so the
tests can check the prepared CSVs against it.
"""

import json
from pathlib import Path

import numpy as np
import soundfile as sf

CLIP_SECONDS = 0.05


def write_clip(path, sample_rate, seconds=CLIP_SECONDS, seed=0):
    """Writes a short noise clip (mono PCM_16 wav, or flac by extension)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    n = int(round(seconds * sample_rate))
    data = 0.01 * np.random.default_rng(seed).standard_normal(n).astype(
        "float32"
    )
    sf.write(str(path), data, sample_rate, subtype="PCM_16")
    return path


def write_corrupt(path):
    """Writes bytes that no decoder accepts (like GTZAN's jazz.00054.wav)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"RIFF\x00\x00\x00\x00not really a wave file" * 4)
    return path


def write_text(path, text):
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


# ESC-50 -------------------------------------------------------------------
ESC50_CLASSES = [(0, "dog"), (1, "rooster"), (2, "pig")]  # target order != abc


def make_esc50(root, folds=5, clips=2):
    """``audio/{fold}-{clip_id}-{take}-{target}.wav`` + ``meta/esc50.csv``."""
    root = Path(root)
    lines = ["filename,fold,target,category,esc10,src_file,take"]
    files = {}
    clip_id = 100000
    for fold in range(1, folds + 1):
        for target, category in ESC50_CLASSES:
            for k in range(clips):
                clip_id += 7
                take = "ABC"[k % 3]
                name = f"{fold}-{clip_id}-{take}-{target}.wav"
                write_clip(root / "audio" / name, 44100, seed=clip_id)
                esc10 = "True" if target == 0 else "False"
                lines.append(
                    f"{name},{fold},{target},{category},{esc10},{clip_id},{take}"
                )
                files[Path(name).stem] = (fold, category)
    write_text(root / "meta" / "esc50.csv", "\n".join(lines) + "\n")
    return {"files": files, "classes": [c for _, c in ESC50_CLASSES]}


# UrbanSound8K -------------------------------------------------------------
US8K_CLASSES = [
    (0, "air_conditioner"),
    (1, "car_horn"),
    (2, "children_playing"),
]


def make_us8k(root, folds=10, clips=2):
    """``audio/fold{k}/*.wav`` + ``metadata/UrbanSound8K.csv``."""
    root = Path(root)
    lines = ["slice_file_name,fsID,start,end,salience,fold,classID,class"]
    files = {}
    fs_id = 7000
    for fold in range(1, folds + 1):
        for class_id, name in US8K_CLASSES:
            fs_id += 13
            for k in range(clips):
                fname = f"{fs_id}-{class_id}-0-{k}.wav"
                write_clip(
                    root / "audio" / f"fold{fold}" / fname,
                    44100,
                    seed=fs_id + k,
                )
                start = 0.5 * k
                lines.append(
                    f"{fname},{fs_id},{start},{start + 4.0},1,{fold},{class_id},{name}"
                )
                files[Path(fname).stem] = (fold, name)
    write_text(root / "metadata" / "UrbanSound8K.csv", "\n".join(lines) + "\n")
    return {"files": files, "classes": [c for _, c in US8K_CLASSES]}


# Speech Commands V2 ---------------------------------------------------------
SPC_WORDS = ["no", "up", "yes"]


def make_spcv2(root, per_word=6):
    """One folder per word, ``_background_noise_``, the two official lists."""
    root = Path(root)
    valid, test, train = [], [], []
    for w, word in enumerate(SPC_WORDS):
        for k in range(per_word):
            # the same speaker hash is reused across words, as in the dataset
            rel = f"{word}/{k:08x}_nohash_{w % 2}.wav"
            write_clip(root / rel, 16000, seed=17 * w + k)
            (valid if k == 0 else test if k == 1 else train).append(rel)
    write_clip(root / "_background_noise_" / "white_noise.wav", 16000)
    write_text(root / "_background_noise_" / "README.md", "noise\n")
    write_text(root / "LICENSE", "CC-BY-4.0\n")
    write_text(root / "README.md", "Speech Commands\n")
    write_text(root / "validation_list.txt", "\n".join(valid) + "\n")
    write_text(root / "testing_list.txt", "\n".join(test) + "\n")
    return {"train": train, "valid": valid, "test": test, "classes": SPC_WORDS}


# NSynth -------------------------------------------------------------------
NSYNTH_FAMILIES = [
    (0, "bass", "synthetic"),
    (3, "guitar", "acoustic"),
    (10, "vocal", "electronic"),
]


def make_nsynth(root, per_family=2):
    """``nsynth-{train,valid,test}/{examples.json,audio/*.wav}``."""
    root = Path(root)
    notes = {}
    for subset in ("train", "valid", "test"):
        examples = {}
        for fam, name, source in NSYNTH_FAMILIES:
            for k in range(per_family):
                inst = (
                    10 * fam
                    + k
                    + {"train": 0, "valid": 300, "test": 600}[subset]
                )
                pitch, velocity = 40 + k, 75
                note = f"{name}_{source}_{inst:03d}-{pitch:03d}-{velocity:03d}"
                write_clip(
                    root / f"nsynth-{subset}" / "audio" / f"{note}.wav",
                    16000,
                    seed=inst,
                )
                examples[note] = {
                    "note": 1000 + len(examples),
                    "note_str": note,
                    "instrument": inst,
                    "instrument_str": f"{name}_{source}_{inst:03d}",
                    "pitch": pitch,
                    "velocity": velocity,
                    "sample_rate": 16000,
                    "qualities": [0] * 10,
                    "qualities_str": [],
                    "instrument_family": fam,
                    "instrument_family_str": name,
                    "instrument_source": 1,
                    "instrument_source_str": source,
                }
                notes[note] = (subset, name)
        write_text(
            root / f"nsynth-{subset}" / "examples.json",
            json.dumps(examples, indent=2),
        )
    return {"notes": notes, "classes": [n for _, n, _ in NSYNTH_FAMILIES]}


# AudioSet-20K ---------------------------------------------------------------
AS_CLASSES = [
    ("/m/09x0r", "Speech"),
    ("/m/05zppz", "Male speech, man speaking"),
    ("/m/04rlf", "Music"),
    ("/m/0jbk", "Animal"),
]


def _segments(rows, n_segs):
    header = (
        "# Segments csv created Sun Mar  5 10:54:31 2017\n"
        f"# num_ytids={n_segs}, num_segs={n_segs}, num_unique_labels=4, "
        "num_positive_labels=30\n"
        "# YTID, start_seconds, end_seconds, positive_labels\n"
    )
    body = "".join(
        f'{y}, {s:.3f}, {s + 10:.3f}, "{",".join(m)}"\n' for y, s, m in rows
    )
    return header + body


def make_as20k(
    root, n_train=20, n_eval=6, missing=("-missingID1", "gone_ID_002")
):
    """Official CSVs + a clip tree with mixed file-name conventions.

    Returns the YTID -> (part, mids) mapping of the clips that exist and the
    YouTube IDs listed without a clip.
    """
    root = Path(root)
    mids = [m for m, _ in AS_CLASSES]
    write_text(
        root / "class_labels_indices.csv",
        "index,mid,display_name\n"
        + "".join(f'{i},{m},"{d}"\n' for i, (m, d) in enumerate(AS_CLASSES)),
    )
    clips, parts = {}, {"train": [], "test": []}
    patterns = ["Y{y}.wav", "{y}.wav", "{y}_{s:.3f}.wav", "{y}.flac"]
    for part, n, folder in (
        ("train", n_train, "balanced_train_segments"),
        ("test", n_eval, "eval_segments"),
    ):
        for i in range(n):
            ytid = f"-{part[:2]}{i:03d}_x-Q"[:11].ljust(11, "z")
            labs = (mids[i % 4],) if i % 3 else (mids[i % 4], mids[(i + 1) % 4])
            start = float(10 * (i % 4))
            name = patterns[i % len(patterns)].format(y=ytid, s=start)
            write_clip(
                root / "audio" / folder / f"sub{i % 2}" / name, 16000, seed=i
            )
            clips[ytid] = (part, labs)
            parts[part].append((ytid, start, labs))
    for k, ytid in enumerate(missing):
        parts["train" if k % 2 == 0 else "test"].append((ytid, 0.0, (mids[0],)))
    write_text(
        root / "balanced_train_segments.csv",
        _segments(parts["train"], len(parts["train"])),
    )
    write_text(
        root / "eval_segments.csv", _segments(parts["test"], len(parts["test"]))
    )
    return {"clips": clips, "missing": list(missing), "classes": mids}


# VoxCeleb1 ----------------------------------------------------------------
def make_vc1(root, speakers=3, unmerged=False):
    """``wav/idXXXXX/<video>/<nnnnn>.wav`` + ``iden_split.txt``.

    Per speaker: video A (3 utterances) is train, video B utterance 1 valid,
    utterance 2 test. With ``unmerged`` the last speaker lives in
    ``vox1_test_wav/wav`` and the others in ``vox1_dev_wav/wav``.
    """
    root = Path(root)
    lines, expected = [], {}
    for s in range(speakers):
        spk = f"id{10001 + s}"
        plan = [
            ("1zcIwhmdeo4", 1, "1"),
            ("1zcIwhmdeo4", 2, "1"),
            ("1zcIwhmdeo4", 3, "1"),
            ("_xY-7Z0aBcd", 1, "2"),
            ("_xY-7Z0aBcd", 2, "3"),
        ]
        for video, n, part in plan:
            rel = f"{spk}/{video}/{n:05d}.wav"
            if unmerged:
                base = (
                    root
                    / ("vox1_test_wav" if s == speakers - 1 else "vox1_dev_wav")
                    / "wav"
                )
            else:
                base = root / "wav"
            write_clip(base / rel, 16000, seed=100 * s + n)
            lines.append(f"{part} {rel}")
            expected[f"{spk}_{video}_{n:05d}"] = (
                {"1": "train", "2": "valid", "3": "test"}[part],
                spk,
            )
    write_text(root / "iden_split.txt", "\n".join(lines) + "\n")
    return {
        "expected": expected,
        "classes": [f"id{10001 + s}" for s in range(speakers)],
    }


# CREMA-D ------------------------------------------------------------------
CREMAD_EMOTIONS = ["ANG", "DIS", "FEA", "HAP", "NEU", "SAD"]


def make_cremad(root, actors=10):
    """``AudioWAV/{ActorID}_{Sentence}_{Emotion}_{Level}.wav``."""
    root = Path(root)
    files = {}
    for a in range(actors):
        actor = str(1001 + a)
        for e, emo in enumerate(CREMAD_EMOTIONS):
            sentence, level = ("DFA", "XX") if e % 2 else ("IEO", "HI")
            stem = f"{actor}_{sentence}_{emo}_{level}"
            write_clip(
                root / "AudioWAV" / f"{stem}.wav", 16000, seed=10 * a + e
            )
            files[stem] = (actor, emo)
    write_text(root / "AudioWAV" / "notes.txt", "not audio\n")
    return {"files": files, "classes": CREMAD_EMOTIONS}


# GTZAN --------------------------------------------------------------------
GTZAN_GENRES = ["blues", "jazz", "rock"]


def make_gtzan(root, per_genre=6, lists=True, corrupt=True, au_lines=False):
    """``genres/<genre>/<genre>.000NN.wav`` (+ the fault-filtered lists).

    jazz.00054.wav is written corrupt when ``corrupt``; it is in no list (as
    in the real filtered split) but is on disk for the fallback split. Lists
    assign clip 0-2 -> train, 3 -> valid, 4 -> test and leave 5 out.
    """
    root = Path(root)
    parts = {"train": [], "valid": [], "test": []}
    for g, genre in enumerate(GTZAN_GENRES):
        for k in range(per_genre):
            rel = f"{genre}/{genre}.{k:05d}.wav"
            write_clip(root / "genres" / rel, 22050, seed=10 * g + k)
            part = (
                "train"
                if k < 3
                else "valid"
                if k == 3
                else "test"
                if k == 4
                else None
            )
            if part:
                parts[part].append(
                    rel.replace(".wav", ".au") if au_lines else rel
                )
    if corrupt:
        write_corrupt(root / "genres" / "jazz" / "jazz.00054.wav")
    if lists:
        for part, rels in parts.items():
            write_text(root / f"{part}_filtered.txt", "\n".join(rels) + "\n")
    return {"parts": parts, "classes": GTZAN_GENRES}


# VoxForge -----------------------------------------------------------------
VOXFORGE_LANGUAGES = ["de", "en", "fr"]


def make_voxforge(root, sessions=5, clips=2, evar_csv=False):
    """``<language>/<session>/wav/*.wav`` (EVAR's archives sorted by language).

    With ``evar_csv``, also ``voxforge.csv`` in EVAR's metadata form
    (``file_name,label,split``, ``file_name`` relative to ``root``), whose
    parts follow the session index (0-2 train, 3 valid, 4 test).
    """
    root = Path(root)
    files, rows = {}, ["file_name,label,split"]
    for li, lang in enumerate(VOXFORGE_LANGUAGES):
        for s in range(sessions):
            session = f"user{li}{s}-20100101-{lang}{s}"
            part = "train" if s < 3 else "valid" if s == 3 else "test"
            for k in range(clips):
                rel = f"{lang}/{session}/wav/a{k:04d}.wav"
                write_clip(root / rel, 16000, seed=100 * li + 10 * s + k)
                files[f"{lang}/{session}/a{k:04d}"] = (lang, session, part)
                rows.append(f"{rel},{lang},{part}")
    csv_path = None
    if evar_csv:
        csv_path = write_text(root / "voxforge.csv", "\n".join(rows) + "\n")
    return {"files": files, "classes": VOXFORGE_LANGUAGES, "csv": csv_path}


# Surge --------------------------------------------------------------------
SURGE_PITCHES = ["9", "10", "60"]  # natural order, not string order


def make_surge(root, tones=10):
    """``<tone>/<pitch>.ogg`` + EVAR's ``dataset_surge_tone_splits.csv`` form.

    The tone list assigns tone 0 -> test, 1 -> valid, the rest -> train.
    """
    root = Path(root)
    files, rows = {}, ["tone,split"]
    for t in range(tones):
        tone = f"surge-patches-Test-Tone-{t}-velocity64"
        rows.append(f"{tone},{'test' if t == 0 else 'valid' if t == 1 else 'train'}")
        for p, pitch in enumerate(SURGE_PITCHES):
            path = root / tone / f"{pitch}.ogg"
            path.parent.mkdir(parents=True, exist_ok=True)
            n = int(round(CLIP_SECONDS * 48000))
            data = 0.01 * np.random.default_rng(10 * t + p).standard_normal(n)
            sf.write(str(path), data.astype("float32"), 48000, format="OGG",
                     subtype="VORBIS")
            files[f"{tone}/{pitch}"] = (pitch, tone)
    csv_path = write_text(root.parent / "surge_tone_splits.csv", "\n".join(rows) + "\n")
    return {"files": files, "classes": SURGE_PITCHES, "csv": csv_path}
