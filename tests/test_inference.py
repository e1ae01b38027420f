"""AaSPEncoder: determinism, batch/padding independence, chunking, export."""

import numpy as np
import pytest
import soundfile as sf
import torch
from pretrained_fixture import TINY_OVERRIDES, make_run, model_yaml

from aasp_sb.inference import AaSPEncoder, export_for_inference, load_encoder

SR = 16000


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    return make_run(tmp_path_factory.mktemp("run"))


@pytest.fixture(scope="module")
def model(run):
    return AaSPEncoder.from_run(run, device="cpu")


def wave(seconds, seed):
    g = torch.Generator().manual_seed(seed)
    n = int(seconds * SR)
    t = torch.arange(n) / SR
    tone = torch.sin(2 * torch.pi * (300 + 100 * seed) * t)
    return (0.3 * tone + 0.05 * torch.randn(n, generator=g)).float()


def test_shapes_and_sizes(model):
    wavs = torch.stack([wave(1.0, 0), wave(1.0, 1)])
    frames = model.encode_batch(wavs)
    # 101 frames -> 7 patch columns; 5 rows x 32 dims = 160 per frame
    assert frames.shape == (2, 7, 160)
    assert model.embed_batch(wavs).shape == (2, model.embedding_size())
    assert model.embed_batch(wavs, pooling="mean+max").shape == (2, 320)
    assert model.encode_batch(wavs, layer=[0, -1]).shape == (2, 7, 320)
    assert model.sample_rate == SR
    assert frames.dtype == torch.float32


def test_embeddings_are_deterministic(run, model):
    wavs = torch.stack([wave(1.2, 0), wave(1.2, 3)])
    a = model.embed_batch(wavs)
    b = model.embed_batch(wavs)
    c = AaSPEncoder.from_run(run, device="cpu").embed_batch(wavs)
    assert torch.equal(a, b)
    assert torch.equal(a, c)


def test_independent_of_batch_composition_and_padding(model):
    short, long = wave(0.37, 0), wave(2.0, 1)  # long > max_frames: chunked
    alone = model.embed_batch(short.unsqueeze(0))
    frames_alone = model.encode_batch(short.unsqueeze(0))
    batch = torch.zeros(2, long.numel())
    batch[0, : short.numel()] = short
    batch[1] = long
    lens = torch.tensor([short.numel() / long.numel(), 1.0])
    in_batch = model.embed_batch(batch, lens)
    frames, mask = model.encode_batch(batch, lens, return_mask=True)
    assert torch.allclose(in_batch[0], alone[0], atol=1e-5)
    n = frames_alone.shape[1]
    assert mask[0].sum() == n and not mask[0, n:].any()
    assert torch.allclose(frames[0, :n], frames_alone[0], atol=1e-5)
    assert frames[0, n:].abs().max() == 0
    # the long clip alone equals its row of the batch too
    assert torch.allclose(model.embed_batch(long.unsqueeze(0))[0], in_batch[1], atol=1e-5)
    # more padding than needed changes nothing
    padded = torch.nn.functional.pad(short, (0, 5000)).unsqueeze(0)
    rel = torch.tensor([short.numel() / padded.shape[1]])
    assert torch.allclose(model.embed_batch(padded, rel)[0], alone[0], atol=1e-5)
    for pooling in ("mean+max",):
        a = model.embed_batch(short.unsqueeze(0), pooling=pooling)
        b = model.embed_batch(batch, lens, pooling=pooling)
        assert torch.allclose(a[0], b[0], atol=1e-5)


def test_intermediate_layers_are_batch_independent(model):
    short, long = wave(0.5, 2), wave(1.5, 4)
    batch = torch.stack([torch.nn.functional.pad(short, (0, long.numel() - short.numel())), long])
    lens = torch.tensor([short.numel() / long.numel(), 1.0])
    a = model.embed_batch(short.unsqueeze(0), layer=[0, 1])
    b = model.embed_batch(batch, lens, layer=[0, 1])
    assert torch.allclose(a[0], b[0], atol=1e-5)
    last = model.embed_batch(short.unsqueeze(0), layer=-1)
    assert torch.allclose(last, model.embed_batch(short.unsqueeze(0), layer=1))
    assert torch.allclose(a[:, 160:], last)  # [0, 1] = block 0 then the final output
    assert not torch.allclose(a[:, :160], last)


def test_chunking_matches_separate_halves(model):
    assert model.encoder.max_frames == 64
    wav = wave(127 * 160 / SR, 5)  # 127 * hop samples -> 128 log-mel frames
    feats, lengths = model.compute_features(wav.unsqueeze(0))
    assert feats.shape[1] == 128
    whole, mask = model.encode_features(feats, lengths)
    first, _ = model.encode_features(feats[:, :64])
    second, _ = model.encode_features(feats[:, 64:])
    assert whole.shape == (1, 8, 160) and mask.all()
    assert torch.allclose(whole, torch.cat([first, second], dim=1), atol=1e-5)
    # and the waveform path chunks the same way
    assert torch.allclose(model.encode_batch(wav.unsqueeze(0)), whole, atol=1e-6)


def test_long_audio_is_chunked(model):
    wav = wave(3.0, 6)  # 301 frames > max_frames = 64
    frames = model.encode_batch(wav.unsqueeze(0))
    assert frames.shape == (1, 19, 160)
    assert torch.isfinite(frames).all()


def test_files(model, tmp_path):
    wav = wave(0.8, 7)
    path = tmp_path / "a.wav"
    sf.write(str(path), wav.numpy(), SR, subtype="FLOAT")
    assert torch.allclose(model.embed_file(str(path)), model.embed_batch(wav.unsqueeze(0))[0], atol=1e-6)
    assert model.encode_file(str(path)).shape == (6, 160)  # 81 frames


def test_export_from_hparams_matches_from_run(run, model, tmp_path):
    wavs = torch.stack([wave(1.0, 8), wave(1.0, 9)])
    lens = torch.tensor([1.0, 0.6])
    out = export_for_inference(run, tmp_path / "export")
    assert (out / "hyperparams.yaml").exists() and (out / "encoder.ckpt").exists()
    loaded = AaSPEncoder.from_hparams(
        source=str(out), savedir=str(tmp_path / "savedir"), run_opts={"device": "cpu"}
    )
    assert torch.equal(loaded.embed_batch(wavs, lens), model.embed_batch(wavs, lens))
    assert loaded.model_fingerprint() == model.model_fingerprint()
    # teacher weights: a different model, exported just as well
    out_t = export_for_inference(run, tmp_path / "export_t", which="teacher")
    teacher = AaSPEncoder.from_run(run, which="teacher", device="cpu")
    loaded_t = AaSPEncoder.from_hparams(
        source=str(out_t), savedir=str(tmp_path / "savedir_t"), run_opts={"device": "cpu"}
    )
    assert torch.equal(loaded_t.embed_batch(wavs), teacher.embed_batch(wavs))
    assert not torch.allclose(teacher.embed_batch(wavs), model.embed_batch(wavs))
    # an exported folder also loads through from_run
    again = AaSPEncoder.from_run(out, device="cpu")
    assert torch.equal(again.embed_batch(wavs), model.embed_batch(wavs))


def test_random_init_is_seeded(tmp_path):
    yaml_path = model_yaml(tmp_path / "m")
    a = load_encoder(hparams_file=yaml_path, random_init=True, seed=1, device="cpu")
    b = load_encoder(hparams_file=yaml_path, random_init=True, seed=1, device="cpu")
    c = load_encoder(hparams_file=yaml_path, random_init=True, seed=2, device="cpu")
    assert a.model_fingerprint() == b.model_fingerprint() != c.model_fingerprint()
    # straight from the repository YAML with overrides
    from pretrained_fixture import TINY_YAML

    d = AaSPEncoder.from_yaml(TINY_YAML, TINY_OVERRIDES, seed=0, device="cpu")
    assert d.embed_batch(wave(0.5, 0).unsqueeze(0)).shape == (1, 160)


def test_layer_out_of_range(model):
    with pytest.raises(ValueError, match="out of range"):
        model.encode_batch(wave(0.5, 0).unsqueeze(0), layer=5)


def test_plain_stem_batch_independence(tmp_path):
    run = make_run(tmp_path / "plain", {"use_aape": False})
    model = AaSPEncoder.from_run(run, device="cpu")
    short, long = wave(0.3, 1), wave(1.1, 2)
    batch = torch.stack([torch.nn.functional.pad(short, (0, long.numel() - short.numel())), long])
    lens = torch.tensor([short.numel() / long.numel(), 1.0])
    a = model.embed_batch(short.unsqueeze(0))
    b = model.embed_batch(batch, lens)
    assert np.allclose(a[0].numpy(), b[0].numpy(), atol=1e-5)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_bf16_close_to_fp32(run):
    wavs = torch.stack([wave(1.0, 0), wave(1.0, 1)])
    ref = AaSPEncoder.from_run(run, device="cpu").embed_batch(wavs)
    fp32 = AaSPEncoder.from_run(run, device="cuda").embed_batch(wavs).cpu()
    bf16 = AaSPEncoder.from_run(run, device="cuda", precision="bf16").embed_batch(wavs)
    assert bf16.dtype == torch.float32
    assert torch.allclose(fp32, ref, atol=1e-3)
    cos = torch.nn.functional.cosine_similarity(bf16.cpu(), ref)
    assert (cos > 0.99).all()


def test_find_weights_prefers_the_best_metric_then_the_newest(tmp_path):
    """A fine-tuning run with several checkpoints serves its best one, as the classifier."""
    from speechbrain.utils.checkpoints import Checkpointer

    from aasp_sb.pretrained import find_weights

    lin = torch.nn.Linear(2, 2)
    run = tmp_path / "ft"
    saver = Checkpointer(run / "save", recoverables={"encoder": lin})
    for metric in (0.5, 0.9, 0.7):  # the best is neither the first nor the newest
        with torch.no_grad():
            lin.weight.fill_(metric)
        saver.save_checkpoint(meta={"metric": metric})
    best = torch.load(find_weights(run), weights_only=True)
    assert torch.all(best["weight"] == 0.9)
    pre = tmp_path / "pre"  # no metric in the meta: the newest
    saver = Checkpointer(pre / "save", recoverables={"encoder": lin})
    for value in (1.0, 2.0):
        with torch.no_grad():
            lin.weight.fill_(value)
        saver.save_checkpoint(meta={"loss": value})
    assert torch.all(torch.load(find_weights(pre), weights_only=True)["weight"] == 2.0)
