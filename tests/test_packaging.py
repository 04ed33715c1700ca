"""What `pip install` ships: every package, with search_spaces/ and evaluators/ under the tuner namespace."""

import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_every_package_on_disk_is_shipped():
    setuptools = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    mapping = setuptools["package-dir"]
    on_disk = set()
    for init in ROOT.glob("tuner/**/__init__.py"):
        on_disk.add(".".join(init.parent.relative_to(ROOT).parts))
    for name, folder in mapping.items():
        on_disk |= {name + "".join("." + p for p in i.parent.relative_to(ROOT / folder).parts)
                    for i in (ROOT / folder).glob("**/__init__.py")}
    assert on_disk == set(setuptools["packages"])
    assert set(mapping) == {"tuner.search_spaces", "tuner.evaluators"}


def test_the_top_level_folders_import_under_tuner():
    import tuner.evaluators.latency
    import tuner.search_spaces.space

    assert Path(tuner.search_spaces.space.__file__).parent.name == "search_spaces"
    assert Path(tuner.evaluators.latency.__file__).parent.name == "evaluators"
