"""The optimiser is a YAML value (``optimizer: sgd|adamw|adam``), switchable from the command line."""

import pathlib

import pytest
import torch
from hyperpyyaml import load_hyperpyyaml

from aasp_sb.optimizers import optimizer_class

HPARAMS = pathlib.Path(__file__).resolve().parents[1] / "hparams" / "finetune"
WIRED = (
    "opt_class: !apply:aasp_sb.optimizers.optimizer_class\n"
    "    name: !ref <optimizer>\n"
    "    momentum: !ref <momentum>\n"
    "    betas: !ref <betas>\n"
    "    amsgrad: !ref <amsgrad>\n"
)


def params():
    return [torch.nn.Parameter(torch.zeros(3))]


def test_each_optimizer_gets_only_its_options():
    sgd = optimizer_class("sgd", momentum=0.8, betas=[0.9, 0.95], amsgrad=True)(
        params(), lr=0.1
    )
    assert isinstance(sgd, torch.optim.SGD) and sgd.defaults["momentum"] == 0.8
    adamw = optimizer_class("adamw", momentum=0.8, betas=[0.9, 0.95], amsgrad=True)(
        params(), lr=0.1
    )
    assert isinstance(adamw, torch.optim.AdamW)
    assert adamw.defaults["betas"] == (0.9, 0.95) and adamw.defaults["amsgrad"]
    adam = optimizer_class("Adam", betas=None)(params(), lr=0.1)
    assert type(adam) is torch.optim.Adam and adam.defaults["betas"] == (0.9, 0.999)


def test_unknown_name_or_option_is_refused_by_name():
    with pytest.raises(ValueError, match="unknown name 'lion'"):
        optimizer_class("lion")
    with pytest.raises(ValueError, match="momentun"):
        optimizer_class("sgd", momentun=0.9)


@pytest.mark.parametrize("path", sorted(HPARAMS.glob("*.yaml")), ids=lambda p: p.stem)
def test_every_finetune_yaml_wires_the_optimizer_keys(path):
    assert WIRED in path.read_text(encoding="utf-8")


@pytest.mark.parametrize(
    "override, expected",
    [(None, torch.optim.AdamW), ("sgd", torch.optim.SGD), ("adam", torch.optim.Adam)],
)
def test_command_line_override_switches_the_optimizer(override, expected):
    overrides = {"data_folder": "unused"}
    if override:
        overrides["optimizer"] = override
    with open(HPARAMS / "demo.yaml", encoding="utf-8") as f:
        hp = load_hyperpyyaml(f, overrides)
    opt = hp["opt_class"](params(), lr=1e-3)
    assert type(opt) is expected
    if expected is torch.optim.SGD:
        assert opt.defaults["momentum"] == hp["momentum"] == 0.9
    else:
        assert opt.defaults["betas"] == tuple(hp["betas"])
