"""The documented install paths: the core imports with torch and numpy only, a missing extra is named in one
line, setup.py's CUDA toolkit detection, and the missing-extension hint."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import fsae._optional as optional
from fsae._optional import MissingExtraError, check, require

ROOT = Path(__file__).resolve().parents[1]
EXTRA_MODULES = ("accelerate", "timm", "yaml", "tqdm", "safetensors", "kornia", "pydensecrf", "torchvision", "PIL")

# Makes the named top-level modules absent, as in an environment without them: every finder on sys.meta_path
# answers None for them (imports raise ModuleNotFoundError, importlib.util.find_spec returns None).
BLOCKER = """
import sys

BLOCKED = set(sys.argv[1].split(","))


class _Absent:
    def __init__(self, inner):
        self.inner = inner

    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in BLOCKED:
            return None
        find = getattr(self.inner, "find_spec", None)
        return None if find is None else find(name, path, target)

    def __getattr__(self, attr):
        return getattr(self.inner, attr)


sys.meta_path[:] = [_Absent(finder) for finder in sys.meta_path]
"""


def run_without(blocked: tuple[str, ...], code: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    return subprocess.run(
        [sys.executable, "-c", BLOCKER + textwrap.dedent(code), ",".join(blocked)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def last_line(result: subprocess.CompletedProcess[str]) -> str:
    return result.stderr.strip().splitlines()[-1]


def test_core_imports_and_runs_with_torch_and_numpy_only():
    result = run_without(
        EXTRA_MODULES,
        """
        import torch

        import fsae.augment, fsae.losses, fsae.ops
        from fsae.losses import EMATeacher, FSAELoss

        leaked = sorted({m.partition(".")[0] for m in sys.modules} & BLOCKED)
        assert not leaked, leaked
        model = torch.nn.Conv2d(3, 5, 3, padding=1)
        with torch.no_grad():
            model.weight.mul_(30)  # confident enough that the teacher's masks are not empty
        weak = torch.rand(2, 3, 16, 16)
        strong = fsae.augment.WeakPerturbation(seed=0)(weak)
        # the strong view's default blur ("wide") is fsae's own Gaussian: no kornia needed
        blurred = fsae.augment.StrongPerturbation(p_blur=1.0, seed=0)(weak)
        assert blurred.shape == weak.shape and not torch.equal(blurred, weak)
        labels = torch.tensor([[1.0, 0, 0, 1], [0, 1, 0, 0]])
        fsae_loss, teacher = FSAELoss(), EMATeacher(model)
        loss = fsae_loss(model(strong), teacher(weak), labels)
        loss.backward()
        teacher.update(model)
        assert torch.isfinite(loss) and loss > 0, loss
        print("ok")
        """,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().endswith("ok")


@pytest.mark.parametrize(
    ("blocked", "statement", "message"),
    [
        ("accelerate", "import fsae.engine", "fsae.engine needs accelerate: pip install 'fsae[train]'"),
        ("yaml", "import fsae.engine.config", "fsae.engine needs pyyaml: pip install 'fsae[train]'"),
        ("timm", "import fsae.infer", "fsae.infer needs timm: pip install 'fsae[train]'"),
        ("PIL", "import fsae.data", "fsae.data needs pillow: pip install 'fsae[train]'"),
        ("timm", "import fsae.models", "fsae.models needs timm: pip install 'fsae[train]'"),
        ("timm", "import fsae.methods", "fsae.methods needs timm: pip install 'fsae[train]'"),
        (
            "pydensecrf",
            "import fsae.infer.crf as c; c._densecrf()",
            "fsae.infer.crf needs pydensecrf2: pip install 'fsae[crf]'",
        ),
    ],
)
def test_a_missing_extra_is_named_in_one_line(blocked, statement, message):
    result = run_without((blocked,), statement)
    assert result.returncode != 0
    assert last_line(result) == f"fsae._optional.MissingExtraError: {message}", result.stderr


def test_require_imports_or_names_the_extra(tmp_path, monkeypatch):
    assert require("math", "train", "fsae.x").sqrt(4.0) == 2.0
    with pytest.raises(MissingExtraError, match=r"^fsae\.x needs fsae_absent_dist: pip install 'fsae\[train\]'$"):
        require("fsae_absent_dist.sub", "train", "fsae.x")
    # a dependency that is there but broken (it misses a module of its own) is not reported as the extra
    (tmp_path / "fsae_broken_dep.py").write_text("import fsae_absent_inner\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(ModuleNotFoundError) as info:
        require("fsae_broken_dep", "train", "fsae.x")
    assert not isinstance(info.value, MissingExtraError) and info.value.name == "fsae_absent_inner"


def test_check(monkeypatch):
    check("fsae.x", "train", "math", "os")
    monkeypatch.setitem(optional.EXTRAS, "demo", {"math": "math", "fsae_absent_dist": "fsae-absent"})
    with pytest.raises(MissingExtraError, match=r"^fsae\.x needs fsae-absent: pip install 'fsae\[demo\]'$"):
        check("fsae.x", "demo")


def test_extras_match_pyproject():
    tomllib = pytest.importorskip("tomllib")
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    for extra, modules in optional.EXTRAS.items():
        declared = {req.split(">")[0].split("=")[0].split("[")[0].strip().lower() for req in extras[extra]}
        assert set(modules.values()) <= declared, (extra, declared)
    core = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    assert sorted(req.split(">")[0].split("=")[0] for req in core) == ["numpy", "torch"]


# ---------------------------------------------------------------------------------------------- setup.py


@pytest.fixture(scope="module")
def setup_py():
    import setuptools

    calls = []
    real = setuptools.setup
    setuptools.setup = lambda **kw: calls.append(kw)
    try:
        spec = importlib.util.spec_from_file_location("fsae_setup_under_test", ROOT / "setup.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    finally:
        setuptools.setup = real
    assert calls == [], "importing setup.py must not run setup()"
    return module


def fake_tree(root: Path, *files: str) -> Path:
    for name in files:
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text("")
    return root


def test_a_toolkit_needs_its_compiler_and_its_runtime(setup_py, tmp_path):
    wrapper = fake_tree(tmp_path / "usr_local", "bin/nvcc")  # /usr/local with a /usr/local/bin/nvcc wrapper
    runtime_only = fake_tree(tmp_path / "runtime", "lib64/libcudart.so")
    lib64 = fake_tree(tmp_path / "cuda", "bin/nvcc", "lib64/libcudart.so")
    targets = fake_tree(tmp_path / "cuda-13.0", "bin/nvcc", "targets/x86_64-linux/lib/libcudart.so")
    assert not setup_py.is_cuda_toolkit(wrapper) and not setup_py.is_cuda_toolkit(runtime_only)
    assert setup_py.is_cuda_toolkit(lib64) and setup_py.is_cuda_toolkit(targets)
    assert not setup_py.is_cuda_toolkit(tmp_path / "missing")
    assert setup_py.find_cuda_toolkit([wrapper, runtime_only, targets, lib64]) == str(targets)
    assert setup_py.find_cuda_toolkit(["", None, wrapper]) is None


def test_where_setup_py_looks(setup_py):
    assert setup_py.cuda_candidates({}, "/usr/local") == ["/usr/local", "/usr/local/cuda"]
    assert setup_py.cuda_candidates({}, None) == ["/usr/local/cuda"]
    env = {"CUDA_HOME": "/opt/cuda", "CUDA_PATH": "/usr/local/cuda"}
    assert setup_py.cuda_candidates(env, "/opt/cuda") == ["/opt/cuda", "/usr/local/cuda"]
    assert setup_py.cuda_candidates({"CUDA_HOME": "", "CUDA_PATH": "/x"}, "/y") == ["/x", "/y", "/usr/local/cuda"]


def test_torchs_wrapper_guess_falls_through_to_usr_local_cuda(setup_py, tmp_path, monkeypatch, capsys):
    wrapper = fake_tree(tmp_path / "usr_local", "bin/nvcc")
    toolkit = fake_tree(tmp_path / "cuda", "bin/nvcc", "lib64/libcudart.so")
    for name in ("CUDA_HOME", "CUDA_PATH", "FSAE_WITH_CUDA"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(setup_py.cpp_extension, "CUDA_HOME", str(wrapper))
    monkeypatch.setattr(setup_py, "DEFAULT_TOOLKIT", str(toolkit))
    assert setup_py.cuda_toolkit() == str(toolkit) and setup_py.want_cuda()
    monkeypatch.setenv("CUDA_HOME", str(wrapper))  # a CUDA_HOME without the runtime is passed over too
    assert setup_py.cuda_toolkit() == str(toolkit)
    assert capsys.readouterr().err == ""


def test_no_toolkit_builds_the_cpu_kernels_and_says_so(setup_py, tmp_path, monkeypatch, capsys):
    wrapper = fake_tree(tmp_path / "usr_local", "bin/nvcc")
    for name in ("CUDA_HOME", "CUDA_PATH", "FSAE_WITH_CUDA"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(setup_py.cpp_extension, "CUDA_HOME", str(wrapper))
    monkeypatch.setattr(setup_py, "DEFAULT_TOOLKIT", str(tmp_path / "no_cuda"))
    assert setup_py.cuda_toolkit() is None and not setup_py.want_cuda()
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "building the CPU kernels only" in err and str(wrapper) in err
    assert setup_py.extension().name == "fsae._C"  # a CppExtension, no .cu source
    assert not any(source.endswith(".cu") for source in setup_py.extension().sources)
    monkeypatch.setenv("FSAE_WITH_CUDA", "1")
    with pytest.raises(RuntimeError, match="no CUDA toolkit"):
        setup_py.want_cuda()


# ------------------------------------------------------------------------------------- the extension hint


def test_the_missing_extension_hint_fits_the_install(tmp_path):
    from fsae.ops._extension import _install_hint

    checkout = _install_hint(ROOT / "fsae")
    assert "make install" in checkout and "pip install --no-build-isolation -e ." in checkout
    installed = _install_hint(fake_tree(tmp_path / "site-packages" / "fsae", "__init__.py"))
    assert "CUDA_HOME" in installed and "--force-reinstall" in installed and "-e ." not in installed
