"""Inference interface of a fine-tuned model (aasp_sb.classify)."""

import json
import pathlib

import pytest
import task_fixtures as fx
import torch
from test_finetune import finetune_args, load_recipe, make_demo

from aasp_sb.classify import AudioClassifier
from aasp_sb.data.audio import load_audio


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    data = make_demo(tmp_path_factory.mktemp("demo"))
    out = tmp_path_factory.mktemp("ft") / "demo"
    load_recipe().main(finetune_args("demo", data, out, number_of_epochs=2))
    return data, out


def test_classify_file_returns_top_k_sorted_scores(demo_run):
    data, out = demo_run
    clf = AudioClassifier.from_run(out)
    classes = (data / "classes.txt").read_text().split()
    assert clf.classes == classes and not clf.multilabel
    wav = sorted((data / "audio" / "chirp").glob("*.wav"))[0]
    top = clf.classify_file(str(wav), top_k=2)
    assert len(top) == 2
    labels, scores = zip(*top)
    assert set(labels) <= set(classes) and len(set(labels)) == 2
    assert list(scores) == sorted(scores, reverse=True)
    everything = clf.classify_file(
        str(wav), top_k=10
    )  # clipped to the 3 classes
    assert len(everything) == 3
    assert sum(s for _, s in everything) == pytest.approx(1.0, abs=1e-5)
    assert [x[0] for x in everything[:2]] == list(labels)
    assert [x[1] for x in everything[:2]] == pytest.approx(list(scores))


def test_from_run_loads_the_best_checkpoint_and_matches_the_test_pass(demo_run):
    data, out = demo_run
    results = json.loads((out / "results.json").read_text())
    clf = AudioClassifier.from_run(out)
    assert clf.checkpoint == pathlib.Path(results["checkpoint"])
    same = AudioClassifier.from_run(
        results["checkpoint"]
    )  # a CKPT folder works too
    wav = load_audio(str(sorted((data / "audio" / "am_05hz").glob("*.wav"))[0]))
    assert torch.allclose(clf.scores(wav), same.scores(wav))


def test_classify_batch_honours_relative_lengths(demo_run):
    _, out = demo_run
    clf = AudioClassifier.from_run(out)
    g = torch.Generator().manual_seed(0)
    short = 0.1 * torch.randn(8000, generator=g)
    padded = torch.cat([short, torch.zeros(8000)])
    other = 0.1 * torch.randn(16000, generator=g)
    batch = clf.classify_batch(
        torch.stack([padded, other]), torch.tensor([0.5, 1.0]), top_k=3
    )
    alone = clf.classify_batch(
        padded.unsqueeze(0), torch.tensor([0.5]), top_k=3
    )
    unmasked = clf.classify_batch(padded.unsqueeze(0), top_k=3)
    # the padding, not the batch-mate, decides: same with the same length ...
    assert torch.allclose(batch.scores[0], alone.scores[0], atol=1e-5)
    # ... and different when the padding is taken as signal
    assert not torch.allclose(alone.scores[0], unmasked.scores[0], atol=1e-5)
    assert batch.top_scores.shape == (2, 3) and len(batch.top_labels) == 2
    assert (batch.top_scores[:, :-1] >= batch.top_scores[:, 1:]).all()


def test_multilabel_run_gives_sigmoid_scores_and_folds_are_named(tmp_path):
    data = tmp_path / "as20k"
    fx.make_as20k(data)
    out = tmp_path / "out"
    load_recipe().main(finetune_args("as20k", data, out))
    clf = AudioClassifier.from_run(out)
    assert clf.multilabel and clf.classes[0] == "Speech"  # display names
    scores = clf.classify_batch(0.1 * torch.randn(2, 16000), top_k=4).scores
    assert ((scores > 0) & (scores < 1)).all()
    assert not torch.allclose(scores.sum(-1), torch.ones(2))

    esc = tmp_path / "esc"
    fx.make_esc50(esc, folds=2)
    cv = tmp_path / "cv"
    load_recipe().main(finetune_args("esc50", esc, cv))
    with pytest.raises(ValueError, match="fold"):
        AudioClassifier.from_run(cv)
    clf = AudioClassifier.from_run(cv, fold="fold2")
    assert clf.classes == [c for _, c in fx.ESC50_CLASSES]


def test_fine_tuned_encoder_loads_for_embeddings(demo_run):
    """A fine-tuning run folder is also a source of embeddings (issue: pre-trained *or* fine-tuned)."""
    from aasp_sb.inference import AaSPEncoder

    _, out = demo_run
    encoder = AaSPEncoder.from_run(str(out))
    clf = AudioClassifier.from_run(str(out))
    wav = torch.randn(1, 16000)
    emb = encoder.embed_batch(wav)
    assert emb.shape[0] == 1 and torch.isfinite(emb).all()
    # the encoder weights are the fine-tuned ones the classifier uses
    a = encoder.mods.encoder.state_dict()
    b = clf.encoder.state_dict()
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key].cpu(), b[key].cpu()), key
