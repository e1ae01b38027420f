"""The HEAR 2021 API: attributes, shapes, timestamps."""

import pytest
import torch
from pretrained_fixture import make_run, model_yaml

from aasp_sb import hear


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    run = make_run(tmp_path_factory.mktemp("run"))
    return hear.load_model(str(run), device="cpu")


def test_attributes(model):
    assert isinstance(model, torch.nn.Module)
    assert model.sample_rate == 16000
    assert model.scene_embedding_size == 160
    assert model.timestamp_embedding_size == 160


def test_timestamp_embeddings(model):
    audio = 0.1 * torch.randn(3, 16000)  # 1 s: 101 frames -> 7 patch columns
    emb, ts = hear.get_timestamp_embeddings(audio, model)
    assert emb.shape == (3, 7, model.timestamp_embedding_size)
    assert ts.shape == (3, 7)
    # column centres; the last column holds frames 96..100 only
    expected = torch.tensor([75.0, 235.0, 395.0, 555.0, 715.0, 875.0, 980.0])
    assert torch.allclose(ts, expected.expand(3, -1))
    assert (ts[:, 1:] > ts[:, :-1]).all()
    assert ts.max() < 1000.0


def test_scene_embeddings_pool_timestamps(model):
    audio = 0.1 * torch.randn(2, 12000)
    scene = hear.get_scene_embeddings(audio, model)
    emb, _ = hear.get_timestamp_embeddings(audio, model)
    assert scene.shape == (2, model.scene_embedding_size)
    assert torch.allclose(scene, emb.mean(1), atol=1e-6)


def test_batching_and_long_audio(model):
    model.batch_size = 2
    audio = 0.1 * torch.randn(5, 3 * 16000)  # 5 sounds, 3 s each (chunked encoder)
    emb, ts = hear.get_timestamp_embeddings(audio, model)
    assert emb.shape == (5, 19, 160) and ts.shape == (5, 19)
    one = hear.get_scene_embeddings(audio[3:4], model)
    assert torch.allclose(hear.get_scene_embeddings(audio, model)[3], one[0], atol=1e-5)
    model.batch_size = 16


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
