"""The wheel (and so the image) holds every package of the service: pyproject.toml lists them by
hand, to leave consumer.devtools out, so a package added under consumer/ must be listed too."""

from __future__ import annotations

import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_every_package_but_the_devtools_is_in_the_wheel():
    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    found = {
        ".".join(init.parent.relative_to(ROOT).parts)
        for top in ("consumer", "rules")
        for init in (ROOT / top).rglob("__init__.py")
    }
    shipped = {name for name in found if not name.startswith("consumer.devtools")}
    assert shipped - listed == set(), "add them to [tool.setuptools] packages in pyproject.toml"
    assert not {name for name in listed if name.startswith("consumer.devtools")}, "development tools are not shipped"
