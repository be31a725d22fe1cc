"""Per-sample op choices applied batch-wise: in each slot, each op drawn runs on all the samples that drew it.

A perturbation is a sequence of *slots*; in each slot every sample gets one op
from a table, with its own magnitude (RandAugment: ``n_ops`` slots over 9 ops;
ColorJitter: 4 slots over its 4 components in a per-sample random order; blur:
one slot over {identity, blur}).  :func:`apply_grouped` runs the slots one
after the other; within a slot each op drawn runs once, in place, on the
sub-batch of the samples that drew it: ``index_select`` them into a contiguous
buffer, apply the op, ``index_copy_`` the result back.  When those samples
already sit next to each other in the batch, the op runs on that slice with no
copy at all.

Whether to copy is a cost decision: gathering and scattering move the op's
samples twice, while running the op on each contiguous run of its samples
instead costs an extra call (Python, dispatch, kernel launches) per run.  On a
GPU copies are nearly free and launches are not, so the samples are always
gathered (one call per op and slot).  On the CPU copying a 448x448 sample costs
more than a few extra calls, so an op runs on each run of consecutive samples
unless the extra calls would cost more than the copies (small images).  (The
copies also allocate: on the CPU a fresh multi-megabyte buffer per op and slot
costs page faults and cache misses that a run-by-run call avoids.)
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch

__all__ = ["GroupedOp", "apply_grouped", "default_call_cost"]

#: An in-place batched op: ``op(images (n, C, H, W), magnitude (n,)) -> images``.
GroupedOp = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def default_call_cost(device: torch.device) -> float:
    """Bytes of batch that one extra op call is worth copying: 1 MiB on the CPU (an op call's ~0.1 ms of
    overhead against a copy at ~10 GB/s), infinite elsewhere (always gather)."""
    return float(2**20) if device.type == "cpu" else math.inf


def _runs(rows: list[int]) -> list[tuple[int, int]]:
    """Maximal runs ``(start, stop)`` of consecutive integers in the sorted list ``rows``."""
    runs, start = [], rows[0]
    for previous, row in zip(rows, [*rows[1:], None], strict=True):
        if row != previous + 1:
            runs.append((start, previous + 1))
            start = row
    return runs


def _call(op: Callable[..., torch.Tensor], images, magnitude, aux: torch.Tensor | None, rows) -> None:
    """``op(images, magnitude)``, or with ``aux``'s rows (a slice or an index tensor) as a third argument."""
    if aux is None:
        op(images, magnitude)
    else:
        op(images, magnitude, aux[rows] if isinstance(rows, slice) else aux.index_select(0, rows))


def apply_grouped(
    images: torch.Tensor,
    choices: torch.Tensor,
    magnitudes: torch.Tensor,
    ops: Sequence[GroupedOp | None],
    call_cost: float | None = None,
    aux: torch.Tensor | None = None,
) -> torch.Tensor:
    """Apply ``ops[choices[i, s]]`` with magnitude ``magnitudes[i, s]`` to sample ``i``, for slots ``s = 0, 1, ...``.

    Args:
        images: ``(B, C, H, W)`` working batch that the caller owns; modified in place and returned.
        choices: ``(B, S)`` integer tensor on the CPU, indices into ``ops``.  On the CPU so that
            grouping needs no device synchronisation.
        magnitudes: ``(B, S)`` float tensor on the CPU; copied to ``images.device`` (as float32)
            once, without a device synchronisation.
        ops: the op table; ``None`` entries are the identity and cost nothing.
        call_cost: the cost of one op call in bytes copied: an op whose ``n`` samples lie in ``R > 1``
            runs of consecutive rows is gathered when ``(R - 1) * call_cost > 2 * n * sample_bytes``,
            else called once per run.  ``math.inf``: always gather (one call per op and slot);
            ``0``: never.  Default :func:`default_call_cost` of the device.
        aux: optional ``(B, ...)`` per-sample tensor on ``images.device`` (e.g. each sample's valid region);
            when given, every op is called as ``op(sub_images, sub_magnitude, sub_aux)`` with the rows of
            ``aux`` that go with its samples.

    Returns:
        ``images``, row ``i`` = sample ``i`` after all slots.

    Cost: per slot and op drawn, one call on a slice or on a gathered sub-batch (plus the
    ``index_select`` / ``index_copy_``), or one call per run of consecutive samples when that is
    cheaper; no Python loop over samples touches image data.
    """
    batch, slots = choices.shape
    if batch == 0 or slots == 0:
        return images
    if call_cost is None:
        call_cost = default_call_cost(images.device)
    sample_bytes = images[0].numel() * images.element_size()
    choices = choices.to(device="cpu", dtype=torch.int64)
    # One host-to-device copy for all slots, without waiting for the work queued on the device.
    on_device = magnitudes.to(dtype=torch.float32).t().contiguous().to(device=images.device, non_blocking=True)
    for slot in range(slots):
        choice = choices[:, slot]
        ops_drawn = [op for op in torch.unique(choice).tolist() if ops[op] is not None]
        if not ops_drawn:
            continue
        magnitude = on_device[slot]
        for op in ops_drawn:
            rows = (choice == op).nonzero().view(-1)
            runs = _runs(rows.tolist())
            if len(runs) == 1:
                start, stop = runs[0]
                _call(ops[op], images[start:stop], magnitude[start:stop], aux, slice(start, stop))
            elif (len(runs) - 1) * call_cost > 2 * len(rows) * sample_bytes:
                index = rows.to(images.device, non_blocking=True)
                sub = images.index_select(0, index)
                _call(ops[op], sub, magnitude.index_select(0, index), aux, index)
                images.index_copy_(0, index, sub)
            else:
                for start, stop in runs:
                    _call(ops[op], images[start:stop], magnitude[start:stop], aux, slice(start, stop))
    return images
