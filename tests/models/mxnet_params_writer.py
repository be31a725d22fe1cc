"""Test helper: write MXNet NDArray-list files (``.params``) in each on-disk version, from the format description.

Independent of the reader under test: it follows MXNet's ``NDArray::Save`` layout (little-endian) for
kMXAPINDArrayListMagic lists of dense arrays, in the legacy (uint32 shape), V1 (0xF993FAC8, int64 shape),
V2 (0xF993FAC9, storage type + int64 shape) and V3 (0xF993FACA, NumPy shape semantics) array formats.
"""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np

TYPE_FLAGS = {
    np.dtype(np.float32): 0,
    np.dtype(np.float64): 1,
    np.dtype(np.float16): 2,
    np.dtype(np.uint8): 3,
    np.dtype(np.int32): 4,
    np.dtype(np.int8): 5,
    np.dtype(np.int64): 6,
    np.dtype(np.bool_): 7,
}
CPU_CONTEXT = struct.pack("<ii", 1, 0)  # dev_type kCPU = 1, dev_id 0


def encode_array(array: np.ndarray | None, version: str = "v2", stype: int = 0) -> bytes:
    """One NDArray as ``NDArray::Save`` writes it; ``None`` is an empty (none) array."""
    shape = () if array is None else array.shape
    if version == "legacy":
        head = struct.pack("<I", len(shape)) + struct.pack(f"<{len(shape)}I", *shape)
    elif version == "v1":
        head = struct.pack("<II", 0xF993FAC8, len(shape)) + struct.pack(f"<{len(shape)}q", *shape)
    elif version in ("v2", "v3"):
        magic = 0xF993FAC9 if version == "v2" else 0xF993FACA
        ndim = -1 if (array is None and version == "v3") else len(shape)
        head = struct.pack("<Iii", magic, stype, ndim) + struct.pack(f"<{len(shape)}q", *shape)
    else:
        raise ValueError(version)
    if array is None:
        return head
    data = np.ascontiguousarray(array).astype(array.dtype.newbyteorder("<"), copy=False).tobytes()
    return head + CPU_CONTEXT + struct.pack("<i", TYPE_FLAGS[array.dtype]) + data


def write_params(path: Path, arrays: dict[str, np.ndarray | None], version: str = "v2") -> Path:
    """Write ``arrays`` (name -> array, in order) as an MXNet ``.params`` file."""
    out = [struct.pack("<QQQ", 0x112, 0, len(arrays))]
    out += [encode_array(a, version) for a in arrays.values()]
    out.append(struct.pack("<Q", len(arrays)))
    for name in arrays:
        raw = name.encode("utf-8")
        out.append(struct.pack("<Q", len(raw)) + raw)
    path.write_bytes(b"".join(out))
    return path
