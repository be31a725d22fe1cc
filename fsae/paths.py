"""Filesystem checks shared by every layer; the bottom of the package (it imports nothing of fsae but
:mod:`fsae.errors`), so that inference (:mod:`fsae.infer`) and training (:mod:`fsae.engine`) both use it without
one importing the other.

* :func:`check_writable`: a recipe's ``--output-dir`` takes files, checked before any work.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from fsae.errors import ConfigError

__all__ = ["check_writable"]


def check_writable(folder: Path, what: str = "--output-dir") -> None:
    """Create ``folder`` if needed and check that it (and an existing ``checkpoints/`` in it) takes new files.

    Raises:
        ConfigError: ``folder`` is a file, cannot be created, or cannot be written (one line).
    """
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise ConfigError(f"{what} {folder} is a file, not a folder")
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise ConfigError(f"{what} {folder} cannot be created: {err.strerror or err}") from None
    for place in (folder, folder / "checkpoints"):
        if not place.is_dir():
            continue
        try:
            with tempfile.NamedTemporaryFile(dir=place, prefix=".fsae_write_test_"):
                pass
        except OSError as err:
            raise ConfigError(f"{what} {folder}: cannot write into {place}: {err.strerror or err}") from None
