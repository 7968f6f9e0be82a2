"""The tutorials under docs/ run as written: every ```python block of a tutorial is executed, in order, in one
namespace, in a temp dir, with ``MINARI_DATASETS_PATH`` pointing at a temp dir and ``SB3_EXPO_DOCS_QUICK=1`` (the
tutorials then pick tiny step counts). A block whose first line starts with ``# not run by the docs tests`` is
skipped (it needs a download or robosuite; the page says so). Also: docs/arguments.md lists every argument.
"""

from __future__ import annotations

import inspect
import pathlib
import re

import pytest
import torch as th

REPO = pathlib.Path(__file__).resolve().parents[1]
DOCS = REPO / "docs"
TUTORIALS = ["online_minari.md", "offline_to_online.md", "robomimic.md", "zoo.md", "evaluation.md"]
SKIP_MARK = "# not run by the docs tests"

_BLOCK = re.compile(r"^```python[^\n]*\n(.*?)^```", re.MULTILINE | re.DOTALL)


def python_blocks(page: pathlib.Path) -> list[str]:
    return [b for b in _BLOCK.findall(page.read_text()) if not b.lstrip().startswith(SKIP_MARK)]


@pytest.fixture(scope="module")
def docs_minari(tmp_path_factory: pytest.TempPathFactory) -> pathlib.Path:
    """One Minari root for all tutorials: the demo dataset is written once."""
    return tmp_path_factory.mktemp("docs_minari")


@pytest.mark.parametrize("name", TUTORIALS)
def test_tutorial_runs(name: str, tmp_path: pathlib.Path, docs_minari: pathlib.Path, monkeypatch: pytest.MonkeyPatch) -> None:
    page = DOCS / name
    blocks = python_blocks(page)
    assert blocks, f"{name} has no python block"
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(docs_minari))
    monkeypatch.setenv("SB3_EXPO_DOCS_QUICK", "1")
    threads = th.get_num_threads()
    namespace: dict = {"__name__": f"docs_{page.stem}"}
    try:
        for i, block in enumerate(blocks):
            code = compile(block, f"{page}:block{i + 1}", "exec")
            exec(code, namespace)  # noqa: S102 - the point of this test
    finally:
        th.set_num_threads(threads)


def test_tutorials_are_linked_and_marked() -> None:
    """Each tutorial uses the QUICK switch, and skipped blocks say why."""
    for name in TUTORIALS:
        text = (DOCS / name).read_text()
        assert "SB3_EXPO_DOCS_QUICK" in text, name
        for block in _BLOCK.findall(text):
            if block.lstrip().startswith(SKIP_MARK):
                assert "needs" in block.splitlines()[0], f"{name}: say what a skipped block needs"


def test_arguments_page_lists_every_argument() -> None:
    from sb3_expo import EXPO, EXPOPolicy

    text = (DOCS / "arguments.md").read_text()
    documented = set(re.findall(r"`([A-Za-z_][A-Za-z0-9_]*)`", text))
    for cls in (EXPO, EXPOPolicy):
        names = [n for n in inspect.signature(cls.__init__).parameters if n not in ("self", "kwargs")]
        missing = [n for n in names if n not in documented]
        assert not missing, f"docs/arguments.md does not document {cls.__name__} arguments {missing}"
    for name, default in [(n, p.default) for n, p in inspect.signature(EXPO.__init__).parameters.items()]:
        if isinstance(default, (int, float)) and not isinstance(default, bool) and name not in ("verbose",):
            row = next(line for line in text.splitlines() if line.startswith(f"| `{name}` |"))
            shown = row.split("|")[2].strip().strip("`").replace("_", "")
            assert float(shown) == float(default), f"docs/arguments.md: {name} default {shown} != {default}"
