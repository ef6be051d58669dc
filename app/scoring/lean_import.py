"""Scoring without the optional packages that LightGBM, lleaves and pyarrow import by default.

lightgbm 4.7 imports scikit-learn, pandas, Dask and matplotlib whenever they are installed (its
``compat`` module and ``__init__``): about 1.5 s of start-up here, against 0.3 s for LightGBM
itself (upstream tracks it: lightgbm-org/LightGBM issue 7327). lleaves imports pandas, and
pyarrow imports it (0.2 s) the first time ``pa.array`` is called. Scoring hands all three plain
numpy and Arrow arrays, so a scoring command runs with those packages hidden: a finder placed
first on ``sys.meta_path`` (the import system's documented hook) answers ``ModuleNotFoundError``
for them, which each library takes as "not installed". The finder is removed on the way out;
packages imported before are not affected.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from importlib.abc import MetaPathFinder
from importlib.machinery import ModuleSpec
from types import ModuleType
from typing import Final

OPTIONAL_PACKAGES: Final = ("sklearn", "pandas", "dask", "distributed", "matplotlib", "graphviz")


class _HiddenPackages(MetaPathFinder):
    """Refuses to find the hidden packages and their submodules."""

    def __init__(self, packages: Sequence[str]) -> None:
        self.packages = frozenset(packages)

    def find_spec(
        self,
        fullname: str,
        path: Sequence[str] | None,
        target: ModuleType | None = None,
    ) -> ModuleSpec | None:
        """Raise for a hidden package; leave every other module to the next finder."""
        if fullname.partition(".")[0] in self.packages:
            raise ModuleNotFoundError(f"{fullname} is hidden while scoring", name=fullname)
        return None


@contextmanager
def optional_packages_hidden() -> Iterator[None]:
    """Within the block, ``OPTIONAL_PACKAGES`` not yet imported behave as if not installed."""
    finder = _HiddenPackages(OPTIONAL_PACKAGES)
    sys.meta_path.insert(0, finder)
    try:
        yield
    finally:
        sys.meta_path.remove(finder)
