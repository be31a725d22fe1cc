"""The method registry: names -> :class:`~fsae.methods.base.WSSSMethod` subclasses (timm-style).

Built-in methods are listed by ``"module:class"`` and imported on first use; a method defined anywhere else
registers itself with the :func:`register_method` decorator when its module is imported (the config key
``method.module`` names such a module: :func:`import_method_module`).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable

from fsae.errors import ConfigError
from fsae.methods.base import WSSSMethod

__all__ = ["build_method", "get_method", "import_method_module", "list_methods", "register_method"]

# name -> the class, or "module:class" of a built-in not imported yet.
_REGISTRY: dict[str, type[WSSSMethod] | str] = {
    "ppc": "fsae.methods.ppc:PPCMethod",
    "sipe": "fsae.methods.sipe:SIPEMethod",
    "mctformer": "fsae.methods.mctformer:MCTformerMethod",
}


def register_method(name: str) -> Callable[[type[WSSSMethod]], type[WSSSMethod]]:
    """Class decorator: ``@register_method("toco") class ToCoMethod(WSSSMethod): ...`` makes ``"toco"`` a
    ``method.name`` of the configs, :func:`build_method` and the recipes.

    ``ValueError`` when ``name`` is taken by another class (re-importing the same module is fine); ``TypeError``
    when the class is not a :class:`WSSSMethod`.
    """

    def decorate(cls: type[WSSSMethod]) -> type[WSSSMethod]:
        if not (isinstance(cls, type) and issubclass(cls, WSSSMethod)):
            raise TypeError(f"register_method({name!r}): {cls!r} is not a WSSSMethod subclass")
        known = _REGISTRY.get(name)
        target = f"{cls.__module__}:{cls.__qualname__}"
        where = known if isinstance(known, str) or known is None else f"{known.__module__}:{known.__qualname__}"
        if where not in (None, target):
            raise ValueError(f"method {name!r} is already registered ({where}); pick another name")
        _REGISTRY[name] = cls
        if "name" not in vars(cls):  # the class's own name attribute, when it does not set one
            cls.name = name
        return cls

    return decorate


def list_methods() -> list[str]:
    """The registered method names, sorted (built-ins are listed before they are imported)."""
    return sorted(_REGISTRY)


def get_method(name: str) -> type[WSSSMethod]:
    """The class registered as ``name`` (importing a built-in's module on first use); ``ValueError`` listing the
    registered names otherwise."""
    if name not in _REGISTRY:
        raise ValueError(f"unknown method {name!r}; registered methods: {', '.join(list_methods())}")
    entry = _REGISTRY[name]
    if isinstance(entry, str):
        module, cls = entry.split(":")
        entry = getattr(importlib.import_module(module), cls)  # its decorator has registered it too
        _REGISTRY[name] = entry
    return entry


def import_method_module(module: str | None, key: str = "method.module") -> None:
    """Import a user's module (``mypkg.toco``) so that its :func:`register_method` runs; None: nothing.

    :class:`~fsae.errors.ConfigError` naming ``key`` when it cannot be imported (one line).
    """
    if not module:
        return
    try:
        importlib.import_module(module)
    except ImportError as err:
        raise ConfigError(f"{key}: cannot import {module!r} ({err})") from None


def build_method(name: str, num_classes: int = 20, **options: object) -> WSSSMethod:
    """The method registered as ``name`` (:func:`list_methods`) for ``num_classes`` foreground classes."""
    return get_method(name)(num_classes=num_classes, **options)
