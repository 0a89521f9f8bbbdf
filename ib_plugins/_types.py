"""Type aliases shared across the library: ``PathLike``, a path given as a string or an ``os.PathLike``."""

from __future__ import annotations

import os
from typing import Union

PathLike = Union[str, os.PathLike[str]]
