"""The dataset registry: names -> :class:`~fsae.data.segmentation.SegmentationDataset` subclasses.

A registered class is built as ``cls(root, split, transform=None, seed=0, saliency_dir=None, on_error="raise")``
by the training recipes and ``cls(root, split)`` by the pseudo-label recipe, and says its number of foreground
classes in the class attribute ``num_classes`` (as :class:`~fsae.data.VOCSegmentation` does).
"""

from __future__ import annotations

from collections.abc import Callable

from fsae.data.segmentation import SegmentationDataset

__all__ = ["get_dataset", "list_datasets", "register_dataset"]

_REGISTRY: dict[str, type[SegmentationDataset]] = {}


def register_dataset(name: str) -> Callable[[type[SegmentationDataset]], type[SegmentationDataset]]:
    """Class decorator: ``@register_dataset("cityscapes_wsss") class MyData(SegmentationDataset): ...`` makes the
    name a ``data.dataset`` of the configs and recipes.

    ``ValueError`` when ``name`` is taken by another class (re-importing the same module is fine); ``TypeError``
    when the class is not a :class:`SegmentationDataset` with an integer ``num_classes``.
    """

    def decorate(cls: type[SegmentationDataset]) -> type[SegmentationDataset]:
        if not (isinstance(cls, type) and issubclass(cls, SegmentationDataset)):
            raise TypeError(f"register_dataset({name!r}): {cls!r} is not a SegmentationDataset subclass")
        if not isinstance(getattr(cls, "num_classes", None), int):
            raise TypeError(f"register_dataset({name!r}): {cls.__qualname__} needs a class attribute num_classes")
        known = _REGISTRY.get(name)
        if known is not None and (known.__module__, known.__qualname__) != (cls.__module__, cls.__qualname__):
            raise ValueError(f"dataset {name!r} is already registered ({known.__module__}:{known.__qualname__})")
        _REGISTRY[name] = cls
        return cls

    return decorate


def list_datasets() -> list[str]:
    """The registered dataset names, sorted."""
    return sorted(_REGISTRY)


def get_dataset(name: str) -> type[SegmentationDataset]:
    """The class registered as ``name``; ``ValueError`` listing the registered names otherwise."""
    if name not in _REGISTRY:
        raise ValueError(f"unknown dataset {name!r}; registered datasets: {', '.join(list_datasets())}")
    return _REGISTRY[name]
