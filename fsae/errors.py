"""The errors every layer raises: one module at the bottom, so that no package imports another's errors upward.

* :class:`ConfigError`: a bad setting, path or command-line value, reported before heavy work starts (one line).
* :class:`DatasetError` (re-exported by :mod:`fsae.data`): a dataset that is missing, in the wrong layout, or holds
  a file that cannot be read.
"""

from __future__ import annotations

__all__ = ["ConfigError", "DatasetError"]


class ConfigError(ValueError):
    """A configuration problem, reported before training starts."""


class DatasetError(ValueError):
    """A dataset problem a user must fix (missing folder or file, unreadable image, bad mask)."""
