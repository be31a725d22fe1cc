"""The segmentation config's value, backbone and option checks: one-line errors before anything is built."""

from __future__ import annotations

import pytest

from fsae.engine import ConfigError, load_seg_config
from fsae.engine.seg_config import SEG_DEFAULTS


@pytest.fixture
def nothing_built(monkeypatch):
    """Fail the test if a config check builds a model."""
    import timm

    import fsae.models.deeplab

    def refuse(*args, **kwargs):
        raise AssertionError("a model was built while loading a config")

    monkeypatch.setattr(timm, "create_model", refuse)
    monkeypatch.setattr(fsae.models.deeplab, "build_segmenter", refuse)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["optim.lr=-1"], "optim.lr must be > 0, got -1"),
        (["optim.weight_decay=-1"], "optim.weight_decay must be >= 0, got -1"),
        (["optim.momentum=1"], "optim.momentum must be in [0, 1), got 1"),
        (["optim.poly_power=0"], "optim.poly_power must be > 0, got 0"),
        (["data.crop_size=4"], "data.crop_size must be >= 8, got 4"),
        (["data.num_workers=-2"], "data.num_workers must be >= 0, got -2"),
        (["data.on_error=maybe"], "data.on_error must be one of ('raise', 'skip'), got 'maybe'"),
        (["train.seed=-1"], "train.seed must be >= 0, got -1"),
        (["eval.crf_gaussian=[0, 3]"], "eval.crf_gaussian must be a list of numbers > 0, got [0, 3]"),
        (["eval.crf_bilateral=[67, -3, 4]"], "eval.crf_bilateral must be a list of numbers > 0, got [67, -3, 4]"),
        (
            ["model.backbone=resnet1888"],
            "model.backbone: unknown backbone 'resnet1888' (timm or fsae; did you mean resnet18?)",
        ),
        (
            ["model.options.dilation=[6, 12]"],
            "unknown option model.options.dilation=[6, 12] (did you mean dilations?); accepted options: dilations",
        ),
        (
            ["model.name=deeplabv3plus", "model.options.dropot=0.1"],
            "unknown option model.options.dropot=0.1 (did you mean dropout?); accepted options: aspp_channels, "
            "dropout, low_level_channels",
        ),
        (["model.options.output_stride=16"], "model.options.output_stride: not an option, it is set from "
         "model.output_stride"),
        (["eval.scales=[0.5, -1]"], "eval.scales must be a non-empty list of positive numbers, got [0.5, -1]"),
        (["data.scale=[1"], "override 'data.scale=[1': value is not valid YAML at column 3: expected ',' or ']', "
         "but got '<stream end>'"),
    ],
)  # fmt: skip
def test_bad_values_are_one_line_errors(nothing_built, overrides, message):
    with pytest.raises(ConfigError) as err:
        load_seg_config(None, overrides)
    assert str(err.value) == message


def test_valid_values_load(nothing_built, tmp_path):
    assert SEG_DEFAULTS["data"]["on_error"] == "raise"
    config = load_seg_config(None, ["data.on_error=skip", "model.options.dilations=[6, 12]", "model.backbone=resnet50"])
    assert config["data"]["on_error"] == "skip" and config["model"]["options"] == {"dilations": [6, 12]}
    path = tmp_path / "seg.yaml"
    path.write_text("model:\n  name: deeplabv3plus\n  options: {dropout: 0.1}\n")
    assert load_seg_config(path)["model"]["options"] == {"dropout": 0.1}
    path.write_text("model:\n  options: {dropout: 0.1\n")
    with pytest.raises(ConfigError, match=r"seg.yaml: not valid YAML at line 3, column 1: expected ',' or '}'"):
        load_seg_config(path)
