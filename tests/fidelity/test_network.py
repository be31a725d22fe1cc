"""The authors' PPC network (``fixtures/ppc_network.npz``) against ours after ``fsae.models.import_checkpoint``."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from fidelity_weights import FIXTURES, authors_state_dict

from fsae.engine.import_run import import_checkpoint, main
from fsae.infer import load_cam_model


def _bg_first(theirs: np.ndarray) -> torch.Tensor:
    t = torch.from_numpy(theirs)
    return torch.cat([t[:, -1:], t[:, :-1]], dim=1)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("import")
    torch.save({f"module.{k}": v for k, v in authors_state_dict(0).items()}, folder / "checkpoint_last.pth")
    assert main(["--method", "ppc", str(folder / "checkpoint_last.pth"), str(folder / "run")]) == 0
    return folder


def test_converted_checkpoint_gives_the_authors_cam_logits(run_dir):
    fixture = np.load(FIXTURES / "ppc_network.npz")
    method, config = load_cam_model(run_dir / "run")
    assert config["_run"]["num_classes"] == 20 and config["method"]["name"] == "ppc"
    with torch.no_grad():
        cam = method.cam_logits(torch.from_numpy(fixture["image"]))
    expected = _bg_first(fixture["cam"])
    assert cam.shape == expected.shape
    torch.testing.assert_close(cam, expected, rtol=0, atol=1e-5 * float(expected.abs().max()))


def test_train_mode_heads_match_with_dropout_off(run_dir):
    """Their forward in train mode (frozen BatchNorm, dropout p set to 0): CAM, PCM-refined CAM, embeddings."""
    fixture = np.load(FIXTURES / "ppc_network.npz")
    method, _ = load_cam_model(run_dir / "run")
    method.train()
    for module in method.modules():
        if isinstance(module, torch.nn.Dropout2d):
            module.p = 0.0
    with torch.no_grad():
        out = method.net(torch.from_numpy(fixture["image"]))
    for ours, theirs in ((out["cam_logits"], fixture["cam_train"]), (out["refined"], fixture["cam_rv"])):
        expected = _bg_first(theirs)
        torch.testing.assert_close(ours, expected, rtol=0, atol=1e-5 * float(expected.abs().max()))
    feat = torch.from_numpy(fixture["feat"])
    torch.testing.assert_close(out["embeddings"], feat, rtol=0, atol=1e-5 * float(feat.abs().max()))


def test_import_refuses_a_used_folder_and_bad_files(run_dir, tmp_path, capsys):
    checkpoint = run_dir / "checkpoint_last.pth"
    assert main(["--method", "ppc", str(checkpoint), str(run_dir / "run")]) == 2
    assert "not an empty folder" in capsys.readouterr().err
    assert (run_dir / "run" / "model.safetensors").is_file()  # untouched
    assert main(["--method", "nosuch", str(checkpoint), str(tmp_path / "a")]) == 2
    assert "converters exist for ['mctformer', 'ppc', 'sipe']" in capsys.readouterr().err
    assert main(["--method", "sipe", str(checkpoint), str(tmp_path / "a")]) == 2  # a PPC file is no SIPE checkpoint
    assert "has no classifier.weight" in capsys.readouterr().err
    assert main(["--method", "ppc", str(tmp_path / "missing.pth"), str(tmp_path / "b")]) == 2
    assert "not found" in capsys.readouterr().err
    state = authors_state_dict(0)
    state["extra_head.weight"] = torch.zeros(3)
    torch.save(state, tmp_path / "extra.pth")
    assert main(["--method", "ppc", str(tmp_path / "extra.pth"), str(tmp_path / "c")]) == 2
    assert "extra_head.weight" in capsys.readouterr().err and not (tmp_path / "c").exists()
    import_checkpoint("ppc", checkpoint, run_dir / "run", overwrite=True)  # --overwrite replaces it


def test_pretrained_path_with_the_authors_checkpoint_stops_and_names_the_converter(run_dir):
    from fsae.methods import build_method

    with pytest.raises(ValueError, match=r"fc8\.weight.*import_checkpoint"):
        build_method("ppc", num_classes=20, backbone="resnet38d", pretrained_path=str(run_dir / "checkpoint_last.pth"))
