"""The HEAR 2021 API: attributes, shapes, timestamps (the validator's rules)."""

import importlib.util

import pytest
import torch
from pretrained_fixture import make_run, model_yaml

from aasp_sb import hear
from aasp_sb.inference import export_for_inference

LENGTHS_S = (1.07, 1.98, 2.74, 4.0)


@pytest.fixture(scope="module")
def forms(tmp_path_factory):
    """The three model forms a user may give: run, CKPT+* and exported folder."""
    run = make_run(tmp_path_factory.mktemp("run"))
    ckpt = next((run / "save").glob("CKPT+*"))
    exported = export_for_inference(run, tmp_path_factory.mktemp("exported"))
    return {"run": run, "ckpt": ckpt, "exported": exported}


@pytest.fixture(scope="module")
def model(forms):
    return hear.load_model(str(forms["run"]), device="cpu")


def test_attributes(model):
    assert isinstance(model, torch.nn.Module)
    assert model.sample_rate == 16000
    assert model.scene_embedding_size == 160
    assert model.timestamp_embedding_size == 160
    assert model.timestamp_hop_ms == 160.0


def check_validator_rules(model, seconds, n=3):
    """What hear-validator checks, plus: every timestamp inside the clip."""
    samples = int(seconds * model.sample_rate)
    audio = torch.rand(n, samples) * 2 - 1
    emb, ts = hear.get_timestamp_embeddings(audio, model)
    assert emb.dtype == torch.float32 and ts.dtype == torch.float32
    assert emb.shape[0] == n and emb.shape[:2] == ts.shape
    assert emb.shape[2] == model.timestamp_embedding_size
    diff = torch.diff(ts)
    assert torch.all(torch.abs(diff - diff.float().mean()) < 1e-3), ts[0].tolist()
    assert torch.allclose(diff, torch.tensor(model.timestamp_hop_ms))
    assert ts.max() <= 1000.0 * samples / model.sample_rate
    # no column whose centre is inside the clip is left out
    assert ts[0, -1] + model.timestamp_hop_ms > 1000.0 * samples / model.sample_rate
    assert torch.isfinite(emb).all() and (emb.abs().sum(-1) > 0).all()
    scene = hear.get_scene_embeddings(audio, model)
    assert scene.dtype == torch.float32
    assert scene.shape == (n, model.scene_embedding_size)
    return emb, ts


@pytest.mark.parametrize("form", ["run", "ckpt", "exported"])
@pytest.mark.parametrize("hop_ms", [None, 40])
def test_validator_rules_every_form(forms, form, hop_ms):
    model = hear.load_model(str(forms[form]), device="cpu", timestamp_hop_ms=hop_ms)
    for seconds in LENGTHS_S:
        check_validator_rules(model, seconds)


def test_timestamps_are_column_centres(model):
    audio = 0.1 * torch.randn(3, 16000)  # 1 s: 101 frames -> 7 patch columns
    emb, ts = hear.get_timestamp_embeddings(audio, model)
    # column j is centred at 75 + 160 j ms; the 7th (frames 96..100, centre
    # 1035 ms) lies past the end and is left out
    expected = torch.tensor([75.0, 235.0, 395.0, 555.0, 715.0, 875.0])
    assert torch.equal(ts, expected.expand(3, -1))
    frames = model.encoder.encode_batch(audio)
    assert frames.shape[1] == 7
    assert torch.equal(emb, frames[:, :6])


def test_finer_hop_is_made_of_real_re_encodes(forms):
    model = hear.load_model(str(forms["run"]), device="cpu", timestamp_hop_ms=40)
    assert model.subdivisions == 4
    audio = 0.1 * torch.randn(2, int(1.5 * 16000))
    emb, ts = hear.get_timestamp_embeddings(audio, model)
    assert ts[0, :6].tolist() == [75.0, 115.0, 155.0, 195.0, 235.0, 275.0]
    for r in range(4):  # timestamp m = 4 j + r: column j of the clip advanced r * 4 frames
        frames = model.encoder.encode_batch(audio[:, r * 640 :])
        got = emb[:, r::4]
        assert torch.allclose(got, frames[:, : got.shape[1]], atol=1e-6)
    coarse = hear.load_model(str(forms["run"]), device="cpu")
    assert torch.allclose(emb[:, ::4], hear.get_timestamp_embeddings(audio, coarse)[0])


def test_bad_hop_and_short_clip(model, forms):
    with pytest.raises(ValueError, match="timestamp_hop_ms=30.*allowed: 160, 80, 40, 20, 10"):
        hear.load_model(str(forms["run"]), device="cpu", timestamp_hop_ms=30)
    emb, ts = hear.get_timestamp_embeddings(torch.zeros(2, 800), model)  # 50 ms
    assert emb.shape == (2, 1, 160) and ts[0].tolist() == [25.0]


def test_scene_embeddings_pool_timestamps(model):
    audio = 0.1 * torch.randn(2, 12000)  # 0.75 s: 5 columns, all centred inside
    scene = hear.get_scene_embeddings(audio, model)
    emb, _ = hear.get_timestamp_embeddings(audio, model)
    assert scene.shape == (2, model.scene_embedding_size)
    assert torch.allclose(scene, emb.mean(1), atol=1e-6)


def test_batching_and_long_audio(model):
    model.batch_size = 2
    audio = 0.1 * torch.randn(5, 3 * 16000)  # 5 sounds, 3 s each (chunked encoder)
    emb, ts = hear.get_timestamp_embeddings(audio, model)
    assert emb.shape == (5, 19, 160) and ts.shape == (5, 19)
    assert torch.allclose(torch.diff(ts), torch.tensor(160.0))
    one = hear.get_scene_embeddings(audio[3:4], model)
    assert torch.allclose(hear.get_scene_embeddings(audio, model)[3], one[0], atol=1e-5)
    model.batch_size = 16


def test_to_device_keeps_the_interface_in_step(forms):
    model = hear.load_model(str(forms["run"]), device="cpu")
    model.encoder.device = "meta-was-wrong"  # as if loaded elsewhere
    model.to("cpu")  # what the validator does
    assert model.device == "cpu"
    emb, _ = hear.get_timestamp_embeddings(torch.zeros(1, 8000), model)
    assert emb.device.type == "cpu"


@pytest.mark.skipif(
    importlib.util.find_spec("hearvalidator") is None
    or importlib.util.find_spec("tensorflow") is None,
    reason="hearvalidator (and tensorflow) not installed",
)
@pytest.mark.parametrize("form", ["run", "ckpt", "exported"])
def test_real_hear_validator(forms, form):
    from hearvalidator.validate import ValidateModel

    ValidateModel("aasp_sb.hear", str(forms[form]), device="cpu")()


def test_options_and_random_init(tmp_path):
    yaml_path = model_yaml(tmp_path / "m")
    model = hear.load_model(
        "", hparams_file=str(yaml_path), random_init=True, device="cpu",
        layer=[0, -1], pooling="mean+max",
    )
    assert model.timestamp_embedding_size == 320
    assert model.scene_embedding_size == 640
    scene = hear.get_scene_embeddings(torch.zeros(1, 8000), model)
    assert scene.shape == (1, 640)
    with pytest.raises(TypeError):
        hear.load_model("", bogus=1)
    with pytest.raises(ValueError):
        hear.load_model("")
