"""Every import path the README, docs/ and zoo_configs/ show resolves, read from the files themselves (a new doc line
with a broken import fails here), plus the paths kept for old imports and for checkpoints saved before
``sb3_expo/wrappers`` was split by concern (into ``sb3_expo/data``, ``sb3_expo/buffers``, ``sb3_expo/utils``).
"""

from __future__ import annotations

import importlib
import importlib.util
import pathlib
import pickle
import re
import subprocess
import sys

import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]
MARKDOWN = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
YAML = sorted((REPO / "zoo_configs").glob("*.yml"))

# `from sb3_expo.x import a, b as c` (also parenthesised over several lines) and `import sb3_expo.x`.
_FROM = re.compile(r"^[ \t]*from[ \t]+(sb3_expo(?:\.\w+)*)[ \t]+import[ \t]+(\([^)]*\)|[^\n#]+)", re.MULTILINE)
_IMPORT = re.compile(r"^[ \t]*import[ \t]+(sb3_expo(?:\.\w+)*)", re.MULTILINE)
# Dotted paths in text, commands and YAML: sb3_expo.wrappers.MinariReplayBuffer, python -m sb3_expo.train, ...
_DOTTED = re.compile(r"(?<![\w./-])sb3_expo(?:\.[A-Za-z_]\w*)+")

# The public names of sb3_expo.wrappers before the split; the facade must keep every one.
WRAPPERS_ALL = [
    "ClipActionToSpace",
    "DeviceReplayBuffer",
    "DictDeviceReplayBuffer",
    "DictMinariReplayBuffer",
    "DictOfflineReplayBuffer",
    "FlattenDictObservation",
    "MinariReplayBuffer",
    "OfflineDataError",
    "OfflineDataset",
    "OfflineDatasetNotFoundError",
    "OfflineReplayBuffer",
    "RobomimicReplayBuffer",
    "STORAGE_CHOICES",
    "ShiftScaleReward",
    "check_action_space",
    "check_finite",
    "check_observation_space",
    "concat_robomimic_obs",
    "flatten_dict_obs",
    "flatten_dict_space",
    "load_minari_dataset",
    "load_robomimic_dataset",
    "minari_datasets_root",
    "offline_row_mask",
    "open_minari_dataset",
    "scale_action",
    "transform_reward",
    "unscale_action",
    "validate_offline_dataset",
]

# Module paths older checkpoints and scripts name (SB3 pickles the replay buffer class by its module path).
OLD_PATHS = {
    "sb3_expo.wrappers.replay_buffers": [
        "OfflineReplayBuffer",
        "DictOfflineReplayBuffer",
        "MinariReplayBuffer",
        "DictMinariReplayBuffer",
        "RobomimicReplayBuffer",
        "OfflineDatasetMissingWarning",
        "offline_row_mask",
    ],
    "sb3_expo.wrappers.device_buffers": ["DeviceReplayBuffer", "DictDeviceReplayBuffer", "STORAGE_CHOICES"],
    "sb3_expo.wrappers.offline_dataset": [
        "OfflineDataError",
        "OfflineDataset",
        "OfflineDatasetNotFoundError",
        "DoneMode",
        "ObsArray",
        "OutOfBounds",
        "check_action_space",
        "check_finite",
        "check_observation_space",
        "concat_robomimic_obs",
        "flatten_dict_obs",
        "flatten_dict_space",
        "load_minari_dataset",
        "load_robomimic_dataset",
        "minari_datasets_root",
        "open_minari_dataset",
        "scale_action",
        "transform_reward",
        "unscale_action",
        "validate_offline_dataset",
    ],
    "sb3_expo.wrappers.env_wrappers": ["ClipActionToSpace", "FlattenDictObservation", "ShiftScaleReward"],
}

# Paths named by the task that must keep working whatever the docs say.
ALWAYS = [
    "sb3_expo.datasets.make_minari",
    "sb3_expo.datasets.make_minari.make_minari_dataset",
    "sb3_expo.presets",
    "sb3_expo.presets.resolve_preset",
    "sb3_expo.wrappers.MinariReplayBuffer",
    "sb3_expo.wrappers.RobomimicReplayBuffer",
    "sb3_expo.wrappers.ShiftScaleReward",
]


def _names(clause: str) -> list[str]:
    """``a, b as c`` or ``(a,\\n b)`` -> ``["a", "b"]``."""
    clause = clause.strip().strip("()")
    return [part.split(" as ")[0].strip() for part in clause.replace("\n", ",").split(",") if part.strip()]


def _doc_imports() -> list[tuple[str, str, str | None]]:
    """(where, module, name or None) for every import statement in the markdown files."""
    found = []
    for page in MARKDOWN:
        text = page.read_text()
        where = page.relative_to(REPO).as_posix()
        for module, clause in _FROM.findall(text):
            found += [(where, module, name) for name in _names(clause) if name != "*"]
        found += [(where, module, None) for module in _IMPORT.findall(text)]
    return sorted(set(found))


def _doc_dotted() -> list[tuple[str, str]]:
    """(where, dotted path) for every ``sb3_expo.<...>`` path in the markdown and YAML files."""
    found = set()
    for path in [*MARKDOWN, *YAML]:
        where = path.relative_to(REPO).as_posix()
        found |= {(where, dotted) for dotted in _DOTTED.findall(path.read_text())}
    return sorted(found)


def _is_submodule(module: object, name: str) -> bool:
    return hasattr(module, "__path__") and importlib.util.find_spec(f"{module.__name__}.{name}") is not None


def resolve(dotted: str) -> object:
    """Import the longest module prefix of ``dotted``, then follow the rest as attributes."""
    parts = dotted.split(".")
    module, i = importlib.import_module(parts[0]), 1
    while i < len(parts) and _is_submodule(module, parts[i]):
        module, i = importlib.import_module(f"{module.__name__}.{parts[i]}"), i + 1
    obj: object = module
    for attr in parts[i:]:
        obj = getattr(obj, attr)
    return obj


def test_the_docs_show_imports() -> None:
    """The regexes find the imports (an empty list would make the tests below vacuous)."""
    modules = {module for _, module, _ in _doc_imports()}
    assert {"sb3_expo", "sb3_expo.wrappers", "sb3_expo.datasets.make_minari"} <= modules
    dotted = {d for _, d in _doc_dotted()}
    assert "sb3_expo.wrappers.MinariReplayBuffer" in dotted


def test_a_broken_path_fails() -> None:
    for dotted in ("sb3_expo.wrappers.NoSuchReplayBuffer", "sb3_expo.no_such_module.Name", "sb3_expo_typo.wrappers"):
        with pytest.raises((ImportError, AttributeError)):
            resolve(dotted)


@pytest.mark.parametrize(("where", "module", "name"), _doc_imports(), ids=lambda x: str(x))
def test_doc_import_resolves(where: str, module: str, name: str | None) -> None:
    mod = importlib.import_module(module)
    if name is not None:
        assert hasattr(mod, name) or _is_submodule(mod, name), (
            f"{where}: `from {module} import {name}` fails"
        )


@pytest.mark.parametrize(("where", "dotted"), _doc_dotted(), ids=lambda x: str(x))
def test_doc_dotted_path_resolves(where: str, dotted: str) -> None:
    try:
        resolve(dotted)
    except (ImportError, AttributeError) as e:
        pytest.fail(f"{where} names {dotted}, which does not resolve: {e!r}")


@pytest.mark.parametrize("dotted", ALWAYS)
def test_kept_path_resolves(dotted: str) -> None:
    resolve(dotted)


def test_wrappers_facade_keeps_every_name() -> None:
    import sb3_expo.wrappers as wrappers

    assert sorted(wrappers.__all__) == sorted(WRAPPERS_ALL)
    for name in WRAPPERS_ALL:
        assert getattr(wrappers, name) is not None


@pytest.mark.parametrize("module", sorted(OLD_PATHS))
def test_old_module_paths_reexport_the_same_objects(module: str) -> None:
    import sb3_expo.wrappers as wrappers
    from sb3_expo.buffers.offline import OfflineDatasetMissingWarning
    from sb3_expo.data import dataset
    from sb3_expo.utils.atomic_io import atomic_path

    new = {**vars(wrappers), **vars(dataset), "OfflineDatasetMissingWarning": OfflineDatasetMissingWarning}
    new["atomic_path"] = atomic_path  # not a wrappers name: sb3_expo.utils.atomic_io
    old = importlib.import_module(module)
    for name in OLD_PATHS[module]:
        assert getattr(old, name) is new[name], f"{module}.{name}"


@pytest.mark.parametrize(
    "name",
    [
        "sb3_expo.wrappers.replay_buffers.MinariReplayBuffer",
        "sb3_expo.wrappers.replay_buffers.DictMinariReplayBuffer",
        "sb3_expo.wrappers.replay_buffers.OfflineReplayBuffer",
        "sb3_expo.wrappers.replay_buffers.RobomimicReplayBuffer",
        "sb3_expo.wrappers.device_buffers.DeviceReplayBuffer",
        "sb3_expo.wrappers.device_buffers.DictDeviceReplayBuffer",
        "sb3_expo.wrappers.offline_dataset.OfflineDataset",
    ],
)
def test_old_pickled_class_paths_load(name: str) -> None:
    """A checkpoint saved before the split pickles its buffer class as ``<old module>.<class>``: it still loads."""
    module, cls = name.rsplit(".", 1)
    payload = f"c{module}\n{cls}\n.".encode()  # pickle protocol 0: GLOBAL opcode, as SB3's zips store a class
    assert pickle.loads(payload) is resolve(f"sb3_expo.wrappers.{cls}")


def test_new_pickles_name_the_new_modules() -> None:
    from sb3_expo.wrappers import DeviceReplayBuffer, MinariReplayBuffer, OfflineDataset

    assert MinariReplayBuffer.__module__ == "sb3_expo.buffers.offline"
    assert DeviceReplayBuffer.__module__ == "sb3_expo.buffers.device"
    assert OfflineDataset.__module__ == "sb3_expo.data.dataset"
    assert pickle.loads(pickle.dumps(MinariReplayBuffer)) is MinariReplayBuffer


def test_minari_reader_does_not_shadow_minari(tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``sb3_expo/data/minari.py`` imports the real ``minari`` library (absolute imports)."""
    library = pytest.importorskip("minari")
    from sb3_expo.data import minari as reader
    from sb3_expo.wrappers import OfflineDatasetNotFoundError

    assert library is not reader and hasattr(library, "load_dataset")
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path))
    with pytest.raises(OfflineDatasetNotFoundError, match="not available locally"):
        reader.open_minari_dataset("sb3-expo/no-such-dataset-v0")  # reaches minari.load_dataset


def test_make_minari_runs_as_a_module() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "sb3_expo.datasets.make_minari", "--help"],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=REPO,
    )
    assert out.returncode == 0, out.stderr
    assert "--dataset-id" in out.stdout
