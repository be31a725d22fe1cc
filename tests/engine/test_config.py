"""Configs: defaults, YAML, overrides, and the errors users see before any heavy work."""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass, field, make_dataclass
from pathlib import Path
from typing import Any, Literal

import pytest

from fsae.engine import DEFAULTS, SEG_DEFAULTS, ConfigError, load_config, load_seg_config
from fsae.engine.config import (
    CAM_SCHEMA,
    CamConfig,
    ConfigSchema,
    OptimSection,
    TrainSection,
    read_config_file,
    set_key,
    setting,
)
from fsae.engine.seg_config import SEG_SCHEMA, SegConfig

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
        "coco_sipe_fsae.yaml", "voc_mctformer_baseline.yaml", "toy_fsae.yaml", "toy_baseline.yaml",
        "voc_seg_deeplabv2.yaml", "voc_seg_deeplabv3plus.yaml", "toy_seg.yaml",
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
    """Written in the file or its _base_ files (not only inherited from DEFAULTS), so a change of the defaults
    cannot move them."""
    raw = read_config_file(CONFIG_DIR / f"{name}.yaml")
    for section, values in AUTHORS_VIEWS.items():
        assert {k: raw[section][k] for k in values} == values
    if name.endswith("fsae"):
        assert {k: raw["augment"][k] for k in AUTHORS_STRONG} == AUTHORS_STRONG


def test_overrides_are_parsed_as_yaml(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("optim:\n  lr: 0.05\n")
    config = load_config(
        path, ["optim.lr=0.02", "fsae.enabled=false", "data.long_side=[256, 448]", "method.options.small_size=3"]
    )
    assert config["optim"]["lr"] == 0.02 and config["fsae"]["enabled"] is False
    assert config["data"]["long_side"] == [256, 448] and config["method"]["options"] == {"small_size": 3}
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
        (["method.name=deeplab"], "method.name: unknown method .deeplab.; registered methods: mctformer, ppc, sipe"),
        (["data.dataset=ade"], "data.dataset: unknown dataset .ade.; registered datasets: coco, (.+, )?voc"),
        (["method.module=no_such_module_xyz"], "method.module: cannot import .no_such_module_xyz."),
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
    (tmp_path / "flow.yaml").write_text("data:\n  long_side: [448, 768}\n")
    with pytest.raises(ConfigError) as err:
        load_config(tmp_path / "flow.yaml")
    where = "at line 2, column 23: expected ',' or ']', but got '}'"
    assert str(err.value) == f"{tmp_path / 'flow.yaml'}: not valid YAML {where}"
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


# --- values, backbones and options checked before anything is built ---------------------------------------------


@pytest.fixture
def nothing_built(monkeypatch):
    """Fail the test if a config check builds a model (timm.create_model / build_method / build_segmenter)."""
    import timm

    import fsae.methods
    import fsae.models.deeplab

    def refuse(*args, **kwargs):
        raise AssertionError("a model was built while loading a config")

    monkeypatch.setattr(timm, "create_model", refuse)
    monkeypatch.setattr(fsae.methods, "build_method", refuse)
    monkeypatch.setattr(fsae.models.deeplab, "build_segmenter", refuse)


PPC_OPTIONS = (
    "contrast_scores, freeze_bn, freeze_stem, head_dropout, nce_weight, ppc_channel_quirk, saliency_alpha, "
    "saliency_small, saliency_tau, saliency_total, small_size, temperature"
)


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("optim.lr=-1", "optim.lr must be > 0, got -1"),
        ("optim.lr=0", "optim.lr must be > 0, got 0"),
        ("optim.weight_decay=-0.1", "optim.weight_decay must be >= 0, got -0.1"),
        ("optim.momentum=1.0", "optim.momentum must be in [0, 1), got 1.0"),
        ("optim.poly_power=0", "optim.poly_power must be > 0, got 0"),
        ("optim.warmup_steps=-1", "optim.warmup_steps must be >= 0, got -1"),
        ("data.crop_size=0", "data.crop_size must be >= 1, got 0"),
        ("data.num_workers=-1", "data.num_workers must be >= 0, got -1"),
        ("data.flip=2", "data.flip must be in [0, 1], got 2"),
        ("data.long_side=[0, 10]", "data.long_side must be a list of numbers >= 1, got [0, 10]"),
        ("data.on_error=ignore", "data.on_error must be one of ('raise', 'skip'), got 'ignore'"),
        ("fsae.weight=-1", "fsae.weight must be >= 0, got -1"),
        ("fsae.conf_threshold=1.5", "fsae.conf_threshold must be in [0, 1], got 1.5"),
        ("fsae.ring_threshold=-0.1", "fsae.ring_threshold must be in [0, 1], got -0.1"),
        ("fsae.ring_kernel=0", "fsae.ring_kernel must be >= 1, got 0"),
        ("fsae.boundary_weight=-2.0", "fsae.boundary_weight must be >= 0, got -2.0"),
        ("augment.n_ops=-1", "augment.n_ops must be >= 0, got -1"),
        ("augment.blur_sigma=[0, 2]", "augment.blur_sigma must be a list of numbers > 0, got [0, 2]"),
        ("augment.blur_sigma=[2, 1]", "augment.blur_sigma must be [min, max], got [2, 1]"),
        ("augment.blur_sigma=[1]", "augment.blur_sigma must be a list of 2 numbers, got [1]"),
        (
            "augment.weak_color_jitter=[0.3, -0.3, 0.3, 0.1]",
            "augment.weak_color_jitter must be a list of numbers >= 0, got [0.3, -0.3, 0.3, 0.1]",
        ),
        (
            "augment.strong_color_jitter=[0.3, 0.3, 0.3, 0.6]",
            "augment.strong_color_jitter: its hue (the 4th number) must be in [0, 0.5], got [0.3, 0.3, 0.3, 0.6]",
        ),
        ("train.seed=-1", "train.seed must be >= 0, got -1"),
        ("train.keep_checkpoints=0", "train.keep_checkpoints must be >= 1, got 0"),
        (
            "method.backbone=resnet1888",
            "method.backbone: unknown backbone 'resnet1888' (timm or fsae; did you mean resnet18?)",
        ),
        (
            "method.options.smal_size=3",
            f"unknown option method.options.smal_size=3 (did you mean small_size?); accepted options: {PPC_OPTIONS}",
        ),
        ("method.options.backbone=resnet18", "method.options.backbone: not an option, it is set from method.backbone"),
        ("method.options.num_classes=3", "method.options.num_classes: not an option, it is set from the dataset"),
        (
            "data.long_side=[448, 768",
            "override 'data.long_side=[448, 768': value is not valid YAML at column 10: expected ',' or ']', "
            "but got '<stream end>'",
        ),
    ],
)
def test_bad_values_are_one_line_errors_before_anything_is_built(nothing_built, override, message):
    with pytest.raises(ConfigError) as err:
        load_config(None, [override])
    assert str(err.value) == message


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["method.name=sipe", "method.backbone=resnet50", "method.options.frozen_levls=1"],
         "unknown option method.options.frozen_levls=1 (did you mean frozen_levels?); accepted options: "),
        (["method.name=sipe", "method.backbone=resnet50", "method.options.fsae_attach=learned"],
         "unknown option method.options.fsae_attach='learned'; accepted options: "),
        (["method.name=mctformer", "method.backbone=deit_small_patch16_224", "method.options.evalcam=attach"],
         "unknown option method.options.evalcam='attach' (did you mean eval_cam?); accepted options: "),
    ],
)  # fmt: skip
def test_options_forwarded_to_the_network_and_timm_are_checked(nothing_built, overrides, message):
    with pytest.raises(ConfigError) as err:
        load_config(None, overrides)
    assert str(err.value).startswith(message) and "\n" not in str(err.value)


def test_valid_backbones_and_options_load(nothing_built):
    assert load_config(None, ["method.backbone=resnet38d"])["method"]["backbone"] == "resnet38d"  # fsae's own
    assert load_config(None, ["method.backbone=resnet18.a1_in1k"])["method"]["backbone"] == "resnet18.a1_in1k"
    sipe = ["method.name=sipe", "method.backbone=resnet50"]
    config = load_config(None, [*sipe, "method.options.frozen_levels=1", "method.options.drop_path_rate=0.1"])
    assert config["method"]["options"] == {"frozen_levels": 1, "drop_path_rate": 0.1}  # SIPENet's, timm ResNet's
    mct = ["method.name=mctformer", "method.backbone=deit_small_patch16_224"]
    config = load_config(None, [*mct, "method.options.depth=2", "method.options.eval_cam=attach"])
    assert config["method"]["options"] == {"depth": 2, "eval_cam": "attach"}
    assert load_config(None, ["data.on_error=skip"])["data"]["on_error"] == "skip"
    assert DEFAULTS["data"]["on_error"] == "raise"
    assert load_config(None, ["fsae.boundary_weight=null"])["fsae"]["boundary_weight"] is None


def test_a_bad_backbone_in_a_file_names_the_key(nothing_built, tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("method:\n  backbone: resnet1888\n")
    with pytest.raises(ConfigError, match=r"^method.backbone: unknown backbone 'resnet1888' \(timm or fsae; did"):
        load_config(path)


def test_clip_grad_norm_is_off_by_default_and_positive_when_set():
    from fsae.engine.config import ConfigError, load_config

    assert load_config()["optim"]["clip_grad_norm"] is None
    assert load_config(None, ["optim.clip_grad_norm=1.0"])["optim"]["clip_grad_norm"] == 1.0
    for bad in ("0", "-1.0", "yes"):
        with pytest.raises(ConfigError, match="optim.clip_grad_norm must be"):
            load_config(None, [f"optim.clip_grad_norm={bad}"])


# --- typed sections: the dataclasses a schema is compiled from ---------------------------------------------------


@dataclass
class _Net:
    depth: int = setting(2, "layers")
    width: int = setting(8, "channels")
    act: Literal["relu", "gelu"] = setting("relu", "activation")
    extra: dict[str, Any] = setting({}, "free keyword arguments")


@dataclass
class _Run:
    lr: float = setting(0.1, "learning rate")
    size: list[float] = setting([1, 2], "height, width", length=2)
    out: str | None = setting(None, "output folder")
    flag: bool = setting(False, "a switch")


@dataclass
class _Small:
    net: _Net = field(default_factory=_Net)
    run: _Run = field(default_factory=_Run)


def test_a_typed_schema_compiles_to_the_tables():
    typed = ConfigSchema.of(_Small, extra_check=_check_small, unknown_hint=SMALL.unknown_hint)
    for name in ("defaults", "choices", "optional", "lists", "ranges", "extra_check", "unknown_hint"):
        assert getattr(typed, name) == getattr(SMALL, name), name
    assert set(typed.free_form) == set(SMALL.free_form) and typed.root is _Small
    assert typed.docs() == {
        "net.depth": "layers", "net.width": "channels", "net.act": "activation", "net.extra": "free keyword arguments",
        "run.lr": "learning rate", "run.size": "height, width", "run.out": "output folder", "run.flag": "a switch",
    }  # fmt: skip
    assert load_config(None, ["net.act=gelu", "run.out=x"], schema=typed) == load_config(
        None, ["net.act=gelu", "run.out=x"], schema=SMALL
    )
    assert _Small().net.extra is not _Small().net.extra  # each instance its own mutable default


@pytest.mark.parametrize(
    ("annotation", "default", "kwargs", "message"),
    [
        (float, 1, {}, "the default 1 is not float"),  # an int default would make the key an int
        (Literal["a", "b"], "c", {}, r"the default 'c' is not one of \('a', 'b'\)"),
        (list[float], [1.0], {"length": 2}, "length 2 is for a list default of that length"),
        (tuple, (1, 2), {}, "a config key is bool, int, float, str, a Literal, a list or a dict"),
        (int | str, 1, {}, "a config key is one type or that type | None"),
        (Literal["a", 1], "a", {}, "the choices of a config key have one type"),
        (float, 0.0, {"allowed": "> 0"}, r"^s.key must be > 0, got 0.0 \(its default\)$"),
        (list[float], [0.5, 2.0], {"allowed": "[0, 1]"}, r"s.key must be a list of numbers in \[0, 1\]"),
        (str, "a", {"allowed": "> 0"}, "a range is for a number or a list of numbers, not str"),
    ],
)
def test_a_default_must_have_its_annotated_type(annotation, default, kwargs, message):
    section = make_dataclass("S", [("key", annotation, setting(default, "a key", **kwargs))])
    root = make_dataclass("R", [("s", section, field(default_factory=section))])
    with pytest.raises(TypeError, match=message):
        ConfigSchema.of(root)


@pytest.mark.parametrize("schema", [CAM_SCHEMA, SEG_SCHEMA], ids=["cam", "seg"])
def test_every_key_has_its_comment(schema):
    docs = schema.docs()
    assert list(docs) == list(schema.known()) and all(docs.values())
    lines = schema.reference().splitlines()
    assert len(lines) == len(docs)
    assert "optim.lr: float = " in schema.reference() and "(> 0) -- the base learning rate" in schema.reference()


def test_the_stages_share_the_optim_and_train_sections():
    """One declaration of the shared keys: same types, ranges and comments, a stage's own default where it differs."""
    hints = {name: typing.get_type_hints(cls) for name, cls in (("cam", CamConfig), ("seg", SegConfig))}
    for section, shared in (("optim", OptimSection), ("train", TrainSection)):
        assert issubclass(hints["cam"][section], shared) and issubclass(hints["seg"][section], shared)
        for f in dataclasses.fields(shared):
            key = f"{section}.{f.name}"
            if key != "optim.schedule":  # the CAM stage adds cosine_epoch
                assert CAM_SCHEMA.choices.get(key) == SEG_SCHEMA.choices.get(key), key
            assert CAM_SCHEMA.ranges.get(key) == SEG_SCHEMA.ranges.get(key), key
            assert CAM_SCHEMA.docs()[key] == SEG_SCHEMA.docs()[key] or key == "optim.schedule", key
    assert (DEFAULTS["optim"]["lr"], SEG_DEFAULTS["optim"]["lr"]) == (0.01, 0.001)
    assert (DEFAULTS["train"]["batch_size"], SEG_DEFAULTS["train"]["batch_size"]) == (8, 10)


# --- _base_: config files over other files ------------------------------------------------------------------------


def _write(folder: Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_text(text)


def test_base_files_are_deep_merged_under_the_file(tmp_path):
    _write(tmp_path, {
        "_base/root.yaml": "net: {depth: 1, extra: {a: 1, b: {c: 2}}}\nrun: {lr: 0.5, size: [3, 4]}\n",
        "_base/mid.yaml": "_base_: root.yaml\nrun.out: mid\nnet: {extra: {b: {d: 3}}}\n",
        "other.yaml": "run: {flag: true, out: other}\n",
        "child.yaml": "_base_: [_base/mid.yaml, other.yaml]\nrun: {size: [5, 6]}\nnet.act: gelu\n",
    })  # fmt: skip
    raw = read_config_file(tmp_path / "child.yaml")
    assert raw == {
        "net": {"depth": 1, "extra": {"a": 1, "b": {"c": 2, "d": 3}}, "act": "gelu"},  # mappings merge
        "run": {"lr": 0.5, "size": [5, 6], "out": "other", "flag": True},  # a list replaces; the later base wins
    }
    config = load_config(tmp_path / "child.yaml", ["run.lr=0.25"], schema=SMALL)  # --set last
    assert config["run"] == {"lr": 0.25, "size": [5, 6], "out": "other", "flag": True}
    assert config["net"] == {"depth": 1, "width": 8, "act": "gelu", "extra": {"a": 1, "b": {"c": 2, "d": 3}}}


def test_a_shared_base_is_no_cycle(tmp_path):
    _write(tmp_path, {"d.yaml": "run: {lr: 1}\n", "b.yaml": "_base_: d.yaml\n", "c.yaml": "_base_: d.yaml\n",
                      "a.yaml": "_base_: [b.yaml, c.yaml]\n"})  # fmt: skip
    assert read_config_file(tmp_path / "a.yaml") == {"run": {"lr": 1}}


def test_base_errors_name_the_chain_of_files(tmp_path):
    _write(tmp_path, {
        "a.yaml": "_base_: b.yaml\n", "b.yaml": "_base_: [ok.yaml, a.yaml]\n", "ok.yaml": "run: {lr: 1}\n",
        "self.yaml": "_base_: ./self.yaml\n", "missing.yaml": "_base_: sub/nope.yaml\n",
        "number.yaml": "_base_: 3\n", "bad.yaml": "_base_: broken.yaml\n", "broken.yaml": "run: [\n",
        "list.yaml": "_base_: top.yaml\n", "top.yaml": "- 1\n", "inner.yaml": "run: {_base_: ok.yaml}\n",
        "unknown.yaml": "_base_: typo.yaml\n", "typo.yaml": "run: {lrr: 1}\n",
    })  # fmt: skip
    a, b, t = tmp_path / "a.yaml", tmp_path / "b.yaml", tmp_path
    cases = {
        "a.yaml": f"_base_ cycle: {a} -> {b} -> {a}",
        "self.yaml": f"_base_ cycle: {t / 'self.yaml'} -> {t / 'self.yaml'}",
        "missing.yaml": f"config file not found: {t / 'sub/nope.yaml'} (_base_ chain: {t / 'missing.yaml'} -> "
        f"{t / 'sub/nope.yaml'})",
        "number.yaml": f"{t / 'number.yaml'}: _base_ must be a file name or a list of file names, got 3",
        "bad.yaml": f"{t / 'broken.yaml'}: not valid YAML at line 2, column 1: expected the node content, but found "
        f"'<stream end>' (_base_ chain: {t / 'bad.yaml'} -> {t / 'broken.yaml'})",
        "list.yaml": f"{t / 'top.yaml'}: the top level must be a mapping (_base_ chain: {t / 'list.yaml'} -> "
        f"{t / 'top.yaml'})",
        "inner.yaml": "unknown config key 'run._base_' [8 keys]",  # only a file's top level names bases
        "unknown.yaml": "unknown config key 'run.lrr' [8 keys]",
    }
    for name, message in cases.items():
        with pytest.raises(ConfigError) as err:
            load_config(tmp_path / name, schema=SMALL)
        assert str(err.value) == message, name


def test_train_compile_is_a_cam_stage_switch_off_by_default():
    assert DEFAULTS["train"]["compile"] is False
    assert load_config(None, ["train.compile=true"])["train"]["compile"] is True
    with pytest.raises(ConfigError, match="^train.compile must be bool, got 1$"):
        load_config(None, ["train.compile=1"])
    with pytest.raises(ConfigError, match="unknown config key 'train.compile'"):
        load_seg_config(None, ["train.compile=true"])
