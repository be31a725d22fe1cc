"""Freezing helpers: parameters by name prefix, and BatchNorm layers that stay frozen through ``model.train()``.

PPC (like PSA and SEAM) trains the ResNet-38 backbone with ``conv1a`` and stage 2 frozen and every BatchNorm frozen:
normalising with the ImageNet running statistics, affine parameters fixed, in train mode too (docs/method.md §4)::

    from fsae.models import PPC_FROZEN_PREFIXES, create_backbone, freeze_batchnorm, freeze_by_prefix

    backbone = create_backbone("resnet38d", pretrained_path="resnet38d.safetensors", features_only=True)
    backbone = freeze_batchnorm(backbone)  # before building the optimizer / EMA teacher / DDP wrapper
    freeze_by_prefix(backbone, PPC_FROZEN_PREFIXES)

PSA did both inside an overridden ``train()``. Here BatchNorm layers are swapped for timm's ``FrozenBatchNorm2d``
(torchvision's): it has no training mode at all, so ``model.train()`` cannot undo the freeze, deep copies (EMA
teachers) and pickles stay frozen, and the state-dict keys are unchanged (``weight``, ``bias``, ``running_mean``,
``running_var``; only the ``num_batches_tracked`` counter is dropped, and ignored on load).
"""

from __future__ import annotations

from collections.abc import Iterable

from timm.layers import freeze_batch_norm_2d
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

__all__ = ["freeze_batchnorm", "freeze_by_prefix"]


def freeze_batchnorm(module: nn.Module) -> nn.Module:
    """Replace every ``BatchNorm2d`` / ``SyncBatchNorm`` (and timm ``BatchNormAct2d``) in ``module`` by a frozen copy.

    The frozen layer computes ``(x - running_mean) / sqrt(running_var + eps) * weight + bias`` in train and eval
    mode alike, with all four tensors as constant buffers (no parameters, no gradient, no statistics update).
    Submodules are replaced in place; the return value is ``module`` itself unless ``module`` is a BatchNorm layer.
    Call it before creating the optimizer, an EMA copy or a DDP wrapper, which capture the parameters.

    Raises:
        ValueError: when a non-2d BatchNorm (``BatchNorm1d`` / ``BatchNorm3d``) is left, which this cannot freeze.
    """
    frozen = freeze_batch_norm_2d(module)
    left = [name for name, m in frozen.named_modules() if isinstance(m, _BatchNorm)]
    if left:
        raise ValueError(f"freeze_batchnorm freezes 2d BatchNorm only; still trainable: {', '.join(left[:5])}")
    return frozen


def _matches(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


def freeze_by_prefix(module: nn.Module, prefixes: Iterable[str]) -> list[str]:
    """Set ``requires_grad=False`` on the parameters of ``module`` whose name lies under one of ``prefixes``.

    Matching is by whole name components: ``"b2"`` freezes ``b2.conv_branch2a.weight`` but not ``b2_1.*`` (list
    ``"b2_1"`` too, as :data:`fsae.models.resnet38d.PPC_FROZEN_PREFIXES` does). Names are relative to ``module``; for
    a timm ``features_only`` wrapper whose parameters all live under ``model.`` (``FeatureGetterNet``), a prefix that
    matches nothing is also tried as ``"model." + prefix``.

    Returns:
        The names of the parameters frozen, in ``named_parameters`` order.

    Raises:
        ValueError: when a prefix matches no parameter (a typo would otherwise silently train everything).
    """
    named = dict(module.named_parameters())
    wrapped = bool(named) and all(name.startswith("model.") for name in named)
    resolved: list[str] = []
    for prefix in prefixes:
        prefix = prefix.rstrip(".")
        if not any(_matches(name, prefix) for name in named):
            if wrapped and any(_matches(name, "model." + prefix) for name in named):
                prefix = "model." + prefix
            else:
                heads = sorted({name.split(".")[0] for name in named})
                raise ValueError(
                    f"freeze_by_prefix: no parameter name starts with {prefix!r}; "
                    f"top-level names are: {', '.join(heads[:12])}{' ...' if len(heads) > 12 else ''}"
                )
        resolved.append(prefix)
    frozen = [name for name in named if any(_matches(name, p) for p in resolved)]
    for name in frozen:
        named[name].requires_grad_(False)
    return frozen
