"""The authors' MCTformer-V2 (``fixtures/mctformer_*.npz``, written by ``gen_mctformer.py``) against fsae's.

Their network's weights are rebuilt from ``fixtures/mctformer_layout.json`` and a seed
(:func:`fidelity_weights.authors_state_dict`), saved in their ``main.py`` format (``{"model": state_dict}``) and
converted with ``python -m fsae.models.import_checkpoint --method mctformer``: every comparison below runs the
converted run folder, so it tests the converter too.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from fidelity_weights import FIXTURES, authors_state_dict
from gen_mctformer import LAYOUT, sizes_and_inputs

from fsae.augment import imagenet_normalize
from fsae.engine.import_run import main
from fsae.infer import load_cam_model, multiscale_cams
from fsae.losses import attach_background
from fsae.models.mctformer_net import MCTformerV2Net, resample_pos_embed
from fsae.ops import cam_normalize

NETWORK = FIXTURES / "mctformer_network.npz"
CAMS = FIXTURES / "mctformer_cams.npz"


@pytest.fixture(scope="module")
def fixture():
    return dict(np.load(NETWORK))


@pytest.fixture(scope="module")
def method(tmp_path_factory):
    folder = tmp_path_factory.mktemp("import_mct")
    torch.save({"model": authors_state_dict(0, LAYOUT)}, folder / "checkpoint.pth")  # their main.py's format
    assert main(["--method", "mctformer", str(folder / "checkpoint.pth"), str(folder / "run")]) == 0
    method, config = load_cam_model(folder / "run")
    assert config["method"]["name"] == "mctformer" and config["_run"]["num_classes"] == 20
    return method


def _inputs(fixture):
    return [
        torch.from_numpy(np.array(a)).permute(2, 0, 1)[None].contiguous() for a in sizes_and_inputs(fixture["image"])
    ]


def _close(ours: torch.Tensor, theirs: np.ndarray, rel: float = 1e-5) -> None:
    expected = torch.from_numpy(theirs)
    assert ours.shape == expected.shape
    torch.testing.assert_close(ours, expected, rtol=0, atol=rel * float(expected.abs().max()))


@pytest.mark.parametrize("index", range(5))
def test_network_at_any_size_equals_theirs(method, fixture, index):
    """75x100, its 0.5 / 1.5 PIL resizes (38x50, 112x150), 96x96 and 224x238: none a multiple of 16 on both sides
    but 96x96; the last on the pretraining grid but not square, so that their position embedding is resampled."""
    image = _inputs(fixture)[index]
    assert tuple(image.shape[-2:]) == tuple(fixture["sizes"][index])
    with torch.no_grad():
        out = method.net(imagenet_normalize(image), attention="all")
    _close(out.token_logits, fixture[f"token_{index}"])
    _close(out.patch_logits, fixture[f"patch_{index}"])
    _close(out.fused, fixture[f"fused_{index}"])
    _close(out.cams, fixture[f"refined_{index}"])


def test_exact_position_resampling_is_the_named_switch(method, fixture):
    """``pos_resample="exact"`` (ours) resamples to the grid size: measurably not theirs."""
    net = MCTformerV2Net(20, pos_resample="exact").eval()
    net.load_state_dict(method.net.state_dict())
    image = imagenet_normalize(_inputs(fixture)[0])
    with torch.no_grad():
        fused = net(image, attention="class").fused
    theirs = torch.from_numpy(fixture["fused_0"])
    assert float((fused - theirs).abs().max() / theirs.abs().max()) > 1e-4


def test_resample_pos_embed_modes():
    pos = torch.randn(1, 3 + 196, 8)
    assert resample_pos_embed(pos, (14, 14), (14, 14), 3, "authors") is pos  # square image on the grid: as is
    moved = resample_pos_embed(pos, (14, 14), (14, 14), 3, "authors", square_image=False)
    assert moved.shape == pos.shape and not torch.equal(moved, pos) and torch.equal(moved[:, :3], pos[:, :3])
    assert torch.equal(resample_pos_embed(pos, (14, 14), (14, 14), 3, "exact", square_image=False), pos)
    # their scale factor: source points at (i + 0.5) * 14 / (g + 0.1) - 0.5, i.e. interpolate with that factor
    grid = pos[:, 3:].reshape(1, 14, 14, 8).permute(0, 3, 1, 2)
    expected = F.interpolate(grid, scale_factor=(4.1 / 14, 6.1 / 14), mode="bicubic").permute(0, 2, 3, 1)
    torch.testing.assert_close(resample_pos_embed(pos, (4, 6), (14, 14), 3)[:, 3:], expected.reshape(1, 24, 8))
    with pytest.raises(ValueError, match="pos_resample"):
        resample_pos_embed(pos, (4, 6), (14, 14), 3, "nearest")


def test_too_small_image_is_refused(method):
    with pytest.raises(ValueError, match="smaller than the patch size"):
        method.net(torch.zeros(1, 3, 15, 40))


@pytest.mark.parametrize(("name", "scales"), [("cams_1", (1.0,)), ("cams_ms", (1.0, 0.5, 1.5))])
def test_authors_cams_equal_their_generated_maps(method, fixture, name, scales):
    """Their ``generate_attention_maps_ms`` (fused, layer-index 3, patch-attn refine, flip) end to end; class 7 has
    an all-zero map at scale 1.0 (their min-max gives 0 there)."""
    cams = np.load(CAMS)
    image = _inputs(fixture)[0]
    labels = torch.from_numpy(cams["labels"])[None]
    out = method.authors_cams(image, labels, scales)
    assert out.shape == (1, 21, 75, 100) and out.dtype == torch.float32
    ids = torch.from_numpy(cams["label_ids"])
    theirs = torch.from_numpy(cams[name])
    torch.testing.assert_close(out[0, 1:][ids], theirs, rtol=0, atol=5e-5)
    absent = torch.ones(20, dtype=torch.bool)
    absent[ids] = False
    assert torch.equal(out[0, 1:][absent], torch.zeros(int(absent.sum()), 75, 100))
    assert torch.all(out[0, 0] == method.seed_threshold)
    for t in (0.1, 0.22, 0.4):  # their seed: argmax over [t, maps] (np.argmax: the first of ties)
        planes = np.concatenate([np.full((1, 75, 100), t, np.float32), np.zeros((20, 75, 100), np.float32)])
        planes[1 + cams["label_ids"]] = cams[name]
        ours = torch.cat([torch.full((1, 75, 100), t), out[0, 1:]])
        agree = (ours.argmax(0).numpy() == planes.argmax(0)).mean()
        assert agree >= 0.999, (t, agree)


def test_authors_cams_checks_its_inputs(method):
    with pytest.raises(ValueError, match="uint8"):
        method.authors_cams(torch.zeros(1, 3, 32, 32), torch.zeros(1, 20))
    with pytest.raises(ValueError, match="labels"):
        method.authors_cams(torch.zeros(1, 3, 32, 32, dtype=torch.uint8), torch.zeros(1, 21))


def test_multiscale_cams_at_any_size_and_scale(method, fixture):
    """``fsae.infer.multiscale_cams`` runs at 75x100 and scales 0.5 / 1 / 1.5 (it raised before) and sums, per
    scale, the derived logits of their refined CAMs (eval-mode ``cam_logits``) upsampled to the image."""
    cams = np.load(CAMS)
    labels = torch.from_numpy(cams["labels"])[None]
    image = _inputs(fixture)[0]
    ours = multiscale_cams(method, image, labels, scales=(1.0, 0.5, 1.5), flip=False)
    total = 0
    for index in (0, 1, 2):  # the fixture's 1.0, 0.5 and 1.5 inputs
        # multiscale_cams gives a method the labels: background from the present classes
        logits = attach_background(torch.from_numpy(fixture[f"refined_{index}"]), labels,
                                   gate_logits=torch.from_numpy(fixture[f"patch_{index}"]))  # fmt: skip
        probs = logits.softmax(dim=1)[:, 1:]
        total = total + F.interpolate(probs, size=(75, 100), mode="bilinear", align_corners=False)
    expected = cam_normalize(total, labels, mode="max", eps=1e-5)
    torch.testing.assert_close(ours, expected, rtol=0, atol=1e-4)


VIEWS = FIXTURES / "mctformer_views.npz"


def test_timm_geometry_gives_their_training_views(fixture):
    """``data.geometry: timm`` (``TimmView`` in the loader, FSAE's weak view with zero jitter, the trainer's
    normalisation and ``random_erase``) against their ``build_transform(True, args)`` with ``main.py``'s
    defaults, draw for draw: every uint8 pixel of the PIL stages, the erasing box and its values."""
    from fsae.augment import TrainingViews, imagenet_normalize
    from fsae.augment.views import random_erase
    from fsae.data.transforms import train_geometry
    from fsae.engine.config import load_config

    theirs = np.load(VIEWS)
    size = int(theirs["view_size"])
    config = load_config(None, ["data.geometry=timm", f"data.crop_size={size}",
                                "augment.weak_color_jitter=[0, 0, 0, 0]"])  # fmt: skip
    geometry = train_geometry(size, mode="timm", flip_p=config["data"]["flip"],
                              auto_augment=config["augment"]["auto_augment"],
                              re_prob=config["augment"]["random_erasing"])  # fmt: skip
    views = TrainingViews.from_config(config)
    erased = 0
    for draw in range(sum(k.startswith("pil_") for k in theirs)):
        sample = geometry({"image": fixture["image"].copy()}, np.random.default_rng([0, 0, draw]))
        assert np.array_equal(sample["image"], theirs[f"pil_{draw}"]), draw
        box = [sample["geometry"][k] for k in ("erase_y", "erase_x", "erase_h", "erase_w")]
        assert box == theirs[f"box_{draw}"].tolist(), draw
        batch_geometry = {k: torch.tensor([v]) for k, v in sample["geometry"].items()}
        image = torch.from_numpy(sample["image"]).permute(2, 0, 1)[None].contiguous()
        generators = {"weak": torch.Generator().manual_seed(0), "strong": torch.Generator().manual_seed(1)}
        weak01, _ = views(image, batch_geometry, size, generators, strong=False)
        assert torch.equal(weak01, image.float() / 255)  # zero jitter: their input as it is
        weak = random_erase(imagenet_normalize(weak01), batch_geometry)
        y, x, h, w = box
        if h:
            erased += 1
            torch.testing.assert_close(weak[0, :, y : y + h, x : x + w], torch.from_numpy(theirs[f"erased_{draw}"]))
        keep = torch.ones(size, size, dtype=torch.bool)
        keep[y : y + h, x : x + w] = False
        torch.testing.assert_close(weak[0][:, keep], imagenet_normalize(weak01)[0][:, keep], rtol=0, atol=0)
    assert erased >= 1


def test_timm_geometry_leaves_the_global_random_streams_alone(fixture):
    import random

    from fsae.data.transforms import TimmView

    view = TimmView(32)
    random.seed(5)
    np.random.seed(5)
    torch.manual_seed(5)
    view({"image": fixture["image"].copy()}, np.random.default_rng(0))
    after = (random.random(), np.random.random(), torch.rand(1).item())
    random.seed(5)
    np.random.seed(5)
    torch.manual_seed(5)
    assert after == (random.random(), np.random.random(), torch.rand(1).item())
    with pytest.raises(ValueError, match="saliency"):
        view({"image": fixture["image"].copy(), "saliency": np.zeros((75, 100), np.uint8)}, np.random.default_rng(0))
