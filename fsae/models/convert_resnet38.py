"""Convert the MXNet ImageNet ResNet-38 checkpoint to a state dict for ``resnet38d``, without MXNet.

Usage::

    python -m fsae.models.convert_resnet38 ilsvrc-cls_rna-a1_cls1000_ep-0001.params resnet38d.safetensors
    python -m fsae.models.convert_resnet38 SRC resnet38d.pth --drop-classifier

``DST`` ending in ``.safetensors`` is written with safetensors, anything else with ``torch.save``. The result has the
PSA / SEAM key layout (:mod:`fsae.models.pretrained` documents it) plus the ImageNet classifier as ``fc.weight`` /
``fc.bias`` unless ``--drop-classifier``; every tensor is checked against the ``resnet38d`` architecture (names and
shapes) before anything is written.

The reader (:func:`read_mxnet_params`) is pure numpy and follows MXNet's ``NDArray::Save`` / ``NDArray::Load``
(``src/ndarray/ndarray.cc``); all integers are little-endian:

* list header: ``uint64 0x112`` (kMXAPINDArrayListMagic), ``uint64 0`` (reserved), ``uint64 n``, then n arrays,
  then ``uint64 m`` names (m = n), each ``uint64 length`` + that many UTF-8 bytes. Checkpoints written by
  ``mx.model.save_checkpoint`` name arrays ``arg:<name>`` (weights) and ``aux:<name>`` (BN moving statistics).
* each array starts with a ``uint32`` that selects the version:

  - ``0xF993FAC9`` (V2, MXNet >= 1.0) or ``0xF993FACA`` (V3, NumPy-shape semantics, MXNet >= 1.6): ``int32``
    storage type (only 0 = dense is handled; sparse arrays raise), shape = ``int32 ndim`` + ``ndim x int64``
    (V2: ndim 0 = empty array; V3: ndim -1 = empty, ndim 0 = scalar);
  - ``0xF993FAC8`` (V1): shape = ``uint32 ndim`` + ``ndim x int64``;
  - anything else (legacy, MXNet < 0.9, as in 2016-era checkpoints): that ``uint32`` is ndim, then ``ndim x
    uint32`` dims;

  then (for a non-empty array) the context ``int32 dev_type, int32 dev_id`` (ignored), ``int32`` type flag
  (0 float32, 1 float64, 2 float16, 3 uint8, 4 int32, 5 int8, 6 int64, 7 bool) and the raw C-order data.

Name mapping (the one PSA's ``convert_mxnet_to_torch`` implements), after stripping ``arg:`` / ``aux:``::

    conv1a_weight                        -> conv1a.weight
    res{S}{U}_branch{B}_weight           -> b{S}[_{k}].conv_branch{B}.weight    U = a -> b{S}, U = b{k} -> b{S}_{k}
    bn{S}{U}_branch{B}_{gamma,beta}      -> b{S}[_{k}].bn_branch{B}.{weight,bias}
    bn{S}{U}_branch{B}_moving_{mean,var} -> b{S}[_{k}].bn_branch{B}.running_{mean,var}
    bn7_{gamma,beta,moving_mean,moving_var} -> bn7.{weight,bias,running_mean,running_var}
    linear1000_{weight,bias}             -> fc.{weight,bias}

with B in 1, 2a, 2b1, 2b2. Any other name is an error (listed), never guessed.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

__all__ = ["convert", "mxnet_to_torch_name", "read_mxnet_params"]

LIST_MAGIC = 0x112
V1_MAGIC = 0xF993FAC8
V2_MAGIC = 0xF993FAC9
V3_MAGIC = 0xF993FACA
DTYPES: dict[int, np.dtype] = {
    0: np.dtype("<f4"),
    1: np.dtype("<f8"),
    2: np.dtype("<f2"),
    3: np.dtype("u1"),
    4: np.dtype("<i4"),
    5: np.dtype("i1"),
    6: np.dtype("<i8"),
    7: np.dtype("?"),
}
_MAX_LEGACY_NDIM = 32  # a legacy header's first word is ndim; anything larger is not a shape


class _Reader:
    def __init__(self, data: bytes, source: str) -> None:
        self.data = memoryview(data)
        self.pos = 0
        self.source = source

    def take(self, count: int, dtype: np.dtype) -> np.ndarray:
        size = count * dtype.itemsize
        if self.pos + size > len(self.data):
            raise ValueError(f"{self.source}: truncated MXNet file (wanted {size} bytes at offset {self.pos})")
        out = np.frombuffer(self.data, dtype=dtype, count=count, offset=self.pos)
        self.pos += size
        return out

    def scalar(self, fmt: str) -> int:
        return int(self.take(1, np.dtype(fmt))[0])


def _read_array(r: _Reader, index: int) -> np.ndarray | None:
    magic = r.scalar("<u4")
    if magic in (V2_MAGIC, V3_MAGIC):
        stype = r.scalar("<i4")
        if stype != 0:
            raise ValueError(f"{r.source}: array {index} has sparse storage type {stype}; only dense is supported")
        ndim = r.scalar("<i4")
        if ndim < 0 or (ndim == 0 and magic == V2_MAGIC):
            return None
        dims = r.take(ndim, np.dtype("<i8"))
    elif magic == V1_MAGIC:
        ndim = r.scalar("<u4")
        if ndim == 0:
            return None
        dims = r.take(ndim, np.dtype("<i8"))
    else:
        ndim = magic
        if ndim > _MAX_LEGACY_NDIM:
            raise ValueError(f"{r.source}: array {index} starts with unknown header 0x{magic:08X}")
        if ndim == 0:
            return None
        dims = r.take(ndim, np.dtype("<u4"))
    shape = tuple(int(d) for d in dims)
    if any(d < 0 for d in shape):
        raise ValueError(f"{r.source}: array {index} has an unknown dimension in shape {shape}")
    r.take(2, np.dtype("<i4"))  # context: dev_type, dev_id
    flag = r.scalar("<i4")
    if flag not in DTYPES:
        raise ValueError(f"{r.source}: array {index} has unsupported MXNet type flag {flag}")
    return r.take(int(np.prod(shape, dtype=np.int64)), DTYPES[flag]).reshape(shape).copy()


def read_mxnet_params(path: str | os.PathLike[str]) -> dict[str, np.ndarray]:
    """Read an MXNet NDArray-list file (``.params``) into ``{name: array}``, names as stored (``arg:...``).

    Empty (none) arrays are skipped. Raises ``ValueError`` on a malformed, truncated, unnamed or sparse file.
    """
    path = Path(path)
    r = _Reader(path.read_bytes(), str(path))
    if len(r.data) < 16 or r.scalar("<u8") != LIST_MAGIC:
        raise ValueError(f"{path}: not an MXNet NDArray list file (no 0x112 magic)")
    r.scalar("<u8")  # reserved
    arrays = [_read_array(r, i) for i in range(r.scalar("<u8"))]
    names = []
    for _ in range(r.scalar("<u8")):
        length = r.scalar("<u8")
        names.append(bytes(r.take(length, np.dtype("u1"))).decode("utf-8"))
    if len(names) != len(arrays):
        raise ValueError(f"{path}: {len(arrays)} arrays but {len(names)} names (unnamed lists are not supported)")
    if r.pos != len(r.data):
        raise ValueError(f"{path}: {len(r.data) - r.pos} unexpected bytes after the names")
    return {name: a for name, a in zip(names, arrays, strict=True) if a is not None}


_BN_PARAMS = {"gamma": "weight", "beta": "bias", "moving_mean": "running_mean", "moving_var": "running_var"}
_BLOCK = re.compile(
    r"^(?P<kind>res|bn)(?P<stage>[2-7])(?P<unit>a|b[1-9])_branch(?P<branch>1|2a|2b1|2b2)"
    r"_(?P<param>weight|gamma|beta|moving_mean|moving_var)$"
)
_BN7 = re.compile(r"^bn7_(?P<param>gamma|beta|moving_mean|moving_var)$")
_FIXED = {"conv1a_weight": "conv1a.weight", "linear1000_weight": "fc.weight", "linear1000_bias": "fc.bias"}


def mxnet_to_torch_name(name: str) -> str | None:
    """``arg:res4b5_branch2b1_weight`` -> ``b4_5.conv_branch2b1.weight``; None for a name outside the mapping."""
    name = re.sub(r"^(arg|aux):", "", name)
    if name in _FIXED:
        return _FIXED[name]
    m = _BN7.match(name)
    if m:
        return "bn7." + _BN_PARAMS[m["param"]]
    m = _BLOCK.match(name)
    if m is None or (m["kind"] == "res") != (m["param"] == "weight"):
        return None
    block = f"b{m['stage']}" if m["unit"] == "a" else f"b{m['stage']}_{m['unit'][1:]}"
    layer = ("conv" if m["kind"] == "res" else "bn") + f"_branch{m['branch']}"
    param = "weight" if m["kind"] == "res" else _BN_PARAMS[m["param"]]
    return f"{block}.{layer}.{param}"


def convert(
    src: str | os.PathLike[str], dst: str | os.PathLike[str], drop_classifier: bool = False
) -> dict[str, torch.Tensor]:
    """Read ``src`` (MXNet ``.params``), map and check the names, write ``dst``; returns the state dict written.

    Raises:
        ValueError: unknown names, duplicates, or tensors whose shape differs from ``resnet38d``'s.
    """
    from fsae.models.resnet38d import ResNet38d

    arrays = read_mxnet_params(src)
    state: dict[str, torch.Tensor] = {}
    unknown = []
    for name, array in arrays.items():
        key = mxnet_to_torch_name(name)
        if key is None:
            unknown.append(name)
        elif key in state:
            raise ValueError(f"{src}: two arrays map to {key}")
        elif not (drop_classifier and key.startswith("fc.")):
            state[key] = torch.from_numpy(np.ascontiguousarray(array))
    if unknown:
        raise ValueError(f"{src}: {len(unknown)} arrays have names outside the ResNet-38 mapping: {unknown[:8]}")

    with torch.device("meta"):
        reference = ResNet38d(num_classes=1000).state_dict()
    wrong = [f"{k} {tuple(v.shape)} (expected {tuple(reference[k].shape)})" for k, v in state.items()
             if k in reference and v.shape != reference[k].shape]  # fmt: skip
    if wrong:
        raise ValueError(f"{src}: shapes differ from resnet38d: {wrong[:8]}")

    dst = Path(dst)
    dst.parent.mkdir(parents=True, exist_ok=True)
    if dst.suffix == ".safetensors":
        from safetensors.torch import save_file

        save_file(state, str(dst), metadata={"source": Path(src).name, "layout": "psa-resnet38d"})
    else:
        torch.save(state, dst)
    return state


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m fsae.models.convert_resnet38",
        description="Convert the MXNet ResNet-38 ImageNet checkpoint (.params) to a resnet38d state dict.",
    )
    parser.add_argument("src", help="MXNet .params file, e.g. ilsvrc-cls_rna-a1_cls1000_ep-0001.params")
    parser.add_argument("dst", help="output file: .safetensors, or any other suffix for torch.save")
    parser.add_argument("--drop-classifier", action="store_true", help="leave out the ImageNet fc layer")
    args = parser.parse_args(argv)
    try:
        state = convert(args.src, args.dst, drop_classifier=args.drop_classifier)
    except (OSError, ValueError) as e:
        print(f"convert_resnet38: error: {e}", file=sys.stderr)
        return 1
    from fsae.models.resnet38d import ResNet38d

    with torch.device("meta"):
        expected = [k for k in ResNet38d(num_classes=0 if args.drop_classifier else 1000).state_dict()
                    if not k.endswith("num_batches_tracked")]  # fmt: skip
    missing = [k for k in expected if k not in state]
    print(
        f"wrote {len(state)} tensors to {args.dst}" + (f"; {len(missing)} resnet38d tensors absent" if missing else "")
    )
    if missing:
        print(f"  absent: {', '.join(missing[:8])}{' ...' if len(missing) > 8 else ''}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
