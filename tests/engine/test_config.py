"""Configs: defaults, YAML, overrides, and the errors users see before any heavy work."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from fsae.engine import DEFAULTS, ConfigError, load_config, load_seg_config
from fsae.engine.config import ConfigSchema, set_key

CONFIG_DIR = Path(__file__).resolve().parents[2] / "recipes" / "configs"
ALL_CONFIGS = sorted(CONFIG_DIR.glob("*.yaml"))
SEG_CONFIGS = [p for p in ALL_CONFIGS if "_seg" in p.stem]  # second stage (recipes/train_seg.py)
CONFIGS = [p for p in ALL_CONFIGS if p not in SEG_CONFIGS]  # CAM stage (recipes/voc_fsae.py, coco_fsae.py)


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_every_shipped_config_loads(path):
    config = load_config(path)
    assert config["method"]["name"] in ("ppc", "sipe", "mctformer")


@pytest.mark.parametrize("path", SEG_CONFIGS, ids=lambda p: p.name)
def test_every_shipped_seg_config_loads(path):
    config = load_seg_config(path)
    assert config["model"]["name"] in ("deeplabv2", "deeplabv3plus")


def test_shipped_configs_are_the_expected_set():
    assert {
        "voc_ppc_fsae.yaml", "voc_sipe_fsae.yaml", "voc_mctformer_fsae.yaml", "coco_ppc_fsae.yaml",
        "coco_sipe_fsae.yaml", "toy_fsae.yaml", "toy_baseline.yaml", "voc_seg_deeplabv2.yaml",
        "voc_seg_deeplabv3plus.yaml", "toy_seg.yaml",
    } <= {p.name for p in ALL_CONFIGS}  # fmt: skip


def test_paper_defaults():
    config = load_config()
    assert config == DEFAULTS
    assert config["fsae"]["conf_threshold"] == 0.95 and config["fsae"]["ring_threshold"] == 0.8
    assert config["fsae"]["ema_decay"] == 0.999 and config["optim"]["poly_power"] == 0.9


#: The authors' view settings each PPC paper config names explicitly (README, "Fidelity"); strong-view keys in the
#: FSAE configs only.
AUTHORS_VIEWS = {"data": {"geometry": "authors", "crop_fill": "black", "saliency_resize": "bicubic"},
                 "augment": {"arithmetic": "uint8", "weak_color_jitter": [0.3, 0.3, 0.3, 0.1]}}  # fmt: skip
AUTHORS_STRONG = {"p_blur": 1.0, "blur": "torchvision", "blur_kernel_size": 0, "solarize_max": 256.0, "n_ops": 5}


@pytest.mark.parametrize("name", ["voc_ppc_fsae", "voc_ppc_baseline", "coco_ppc_fsae", "coco_ppc_baseline"])
def test_ppc_paper_configs_name_the_authors_views(name):
    """Written in the file (not only inherited from DEFAULTS), so a change of the defaults cannot move them."""
    raw = yaml.safe_load((CONFIG_DIR / f"{name}.yaml").read_text())
    for section, values in AUTHORS_VIEWS.items():
        assert {k: raw[section][k] for k in values} == values
    if name.endswith("fsae"):
        assert {k: raw["augment"][k] for k in AUTHORS_STRONG} == AUTHORS_STRONG


def test_overrides_are_parsed_as_yaml(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("optim:\n  lr: 0.05\n")
    config = load_config(
        path, ["optim.lr=0.02", "fsae.enabled=false", "data.long_side=[256, 448]", "method.options.top=3"]
    )
    assert config["optim"]["lr"] == 0.02 and config["fsae"]["enabled"] is False
    assert config["data"]["long_side"] == [256, 448] and config["method"]["options"] == {"top": 3}
    assert load_config(path)["optim"]["lr"] == 0.05


@pytest.mark.parametrize(
    ("overrides", "match"),
    [
        (["optim.learning_rate=0.1"], "unknown config key 'optim.learning_rate'"),
        (["lr=0.1"], r"unknown config key 'lr' \(did you mean optim.lr\?\)"),
        (["optim.lr=fast"], "optim.lr must be float"),
        (["optim.lr={a: 1}"], r"optim.lr must be float, got \{'a': 1\}"),
        (["data.saliency_dir={a: 1}"], "data.saliency_dir must be str, got"),
        (["train.max_steps=1.5"], "train.max_steps must be int"),
        (["train.max_steps=0"], "train.max_steps must be >= 1"),
        (["method.name=deeplab"], "method.name must be one of"),
        (["train.mixed_precision=fp8"], "train.mixed_precision must be one of"),
        (["fsae.ema_decay=1.0"], r"fsae.ema_decay must be in \[0, 1\)"),
        (["optim.lr"], "override must look like key=value"),
        (["data.long_side=[500, 100]"], "data.long_side must be"),
        (["augment.blur_kernel_size=4"], "augment.blur_kernel_size must be 0"),
        (["augment.p_blur=1.5"], r"augment.p_blur must be in \[0, 1\]"),
        (["augment.solarize_max=300"], r"augment.solarize_max must be in \(0, 256\]"),
        (["data.geometry=canvas"], "data.geometry must be one of"),
        (["augment.arithmetic=int8"], "augment.arithmetic must be one of"),
    ],
)
def test_bad_values(overrides, match):
    with pytest.raises(ConfigError, match=match):
        load_config(None, overrides)


def test_bad_files(tmp_path):
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "missing.yaml")
    (tmp_path / "bad.yaml").write_text("optim: [\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(tmp_path / "bad.yaml")
    (tmp_path / "section.yaml").write_text("optimizer:\n  lr: 1\n")
    with pytest.raises(ConfigError, match="unknown config key 'optimizer'"):
        load_config(tmp_path / "section.yaml")


# --- the generic loader, on a small schema of its own ----------------------------------------------------------


def _check_small(config):
    if config["net"]["depth"] > config["net"]["width"]:
        raise ConfigError("net.depth must be <= net.width")


SMALL = ConfigSchema(
    defaults={
        "net": {"depth": 2, "width": 8, "act": "relu", "extra": {}},
        "run": {"lr": 0.1, "size": [1, 2], "out": None, "flag": False},
    },
    choices={"net.act": ("relu", "gelu")},
    optional={"run.out": str},
    free_form={"net.extra"},
    lists={"run.size": 2},
    extra_check=_check_small,
    unknown_hint=lambda dotted, known: f" [{len(known)} keys]",
)


def test_schema_loader_sets_merges_and_copies(tmp_path):
    path = tmp_path / "small.yaml"
    path.write_text("net:\n  act: gelu\n  extra: {a: {b: 1}}\nrun.lr: 1\n")
    config = load_config(path, ["run={out: here, size: [3, 4.5]}", "net.extra.c=2"], schema=SMALL)
    assert config == {
        "net": {"depth": 2, "width": 8, "act": "gelu", "extra": {"a": {"b": 1}, "c": 2}},
        "run": {"lr": 1, "size": [3, 4.5], "out": "here", "flag": False},
    }
    assert SMALL.defaults["net"]["extra"] == {} and SMALL.defaults["run"]["out"] is None  # defaults untouched
    assert load_config(schema=SMALL) == SMALL.defaults


@pytest.mark.parametrize(
    ("overrides", "match"),
    [
        (["net.heads=4"], r"unknown config key 'net.heads' \[8 keys\]$"),  # the schema's hint (free-form key: one)
        (["depth=1"], r"unknown config key 'depth' \[8 keys\]$"),
        (["net.depth=true"], "net.depth must be int, got True"),
        (["run.lr=[1]"], "run.lr must be float"),
        (["run.flag=1"], "run.flag must be bool"),
        (["run.out=3"], "run.out must be str"),
        (["net.extra=1"], "net.extra must be a mapping"),
        (["net.act=tanh"], r"net.act must be one of \('relu', 'gelu'\)"),
        (["run.size=[1, 2, 3]"], "run.size must be a list of 2 numbers"),
        (["run.size=[1, false]"], "run.size must be a list of 2 numbers"),
        (["net.depth=9"], "net.depth must be <= net.width"),  # extra_check
    ],
)
def test_schema_loader_errors(overrides, match):
    with pytest.raises(ConfigError, match=match):
        load_config(None, overrides, schema=SMALL)


def test_default_hint_and_set_key():
    with pytest.raises(ConfigError, match=r"unknown config key 'run.act' \(did you mean net.act\?\)"):
        load_config(None, ["run.act=relu"], schema=ConfigSchema(defaults=SMALL.defaults, free_form={"net.extra"}))
    config = load_config()
    set_key(config, "optim", {"lr": 0.5, "name": "adamw"})  # a section given as a mapping is merged
    assert config["optim"]["lr"] == 0.5 and config["optim"]["name"] == "adamw" and config["optim"]["momentum"] == 0.9
    with pytest.raises(ConfigError, match="unknown config key 'optim.foo'"):
        set_key(config, "optim", {"foo": 1})
