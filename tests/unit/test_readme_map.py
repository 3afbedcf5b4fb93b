from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
LEAVES = {"static", "templates", "__pycache__", "versions"}


def _layout_section() -> str:
    readme = (ROOT / "README.md").read_text()
    start = readme.index("### Layout: which folder to open")
    end = readme.index("\n## ", start)
    return readme[start:end]


def test_readme_layout_names_every_package_folder() -> None:
    section = _layout_section()
    named = set(re.findall(r"`((?:actors|model)(?:/[\w]+)*)/`", section))
    folders = {
        path.relative_to(ROOT).as_posix()
        for top in ("actors", "model")
        for path in [ROOT / top, *(ROOT / top).rglob("*")]
        if path.is_dir() and path.name not in LEAVES and not path.name.startswith(".")
    }
    assert folders - named == set()
    assert named - folders == set()
