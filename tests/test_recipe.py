"""The README's model-loading recipe, run as written on a tutorial-space and an extended-space
model; the other pages show the same block, and the README shows it first."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest
import torch

from tests.conftest import ROOT, Searched, run_main

README = ROOT / "README.md"
FENCE = re.compile(r"^```python\n(.*?)^```", re.MULTILINE | re.DOTALL)


def recipe() -> str:
    """The README's first Python block: the recipe a newcomer copies."""
    blocks = FENCE.findall(README.read_text())
    assert blocks, "README.md shows no Python block"
    return blocks[0]


def test_one_recipe_everywhere() -> None:
    block = recipe()
    assert "load_trained" in block and "load_state_dict" not in block
    for page in ("README.md", "docs/pipeline.md", "docs/spaces.md", "docs/api.md"):
        blocks = FENCE.findall((ROOT / page).read_text())
        if page != "README.md" and page != "docs/api.md":
            assert block in blocks, f"{page} does not show the README's recipe"
        others = [b for b in blocks if "load_state_dict" in b or "NeuralNetwork()" in b]
        assert others == [], f"{page} shows a way to load a model that fits one space: {others}"


def _trained_in_studies(study: Searched, tmp_path: Path) -> Path:
    """A folder whose studies/ holds a retrain of ``study`` (fashion-mnist-model.pt and
    -test.json), as train writes them by default."""
    studies = tmp_path / "studies"
    studies.mkdir()
    if not (study.dir / "fashion-mnist-test.json").exists():  # the tutorial study: train it
        copy = study.copy_to(tmp_path)
        result = run_main("tuning.train", "--storage", copy.url, "--data-dir", str(copy.data),
                          "--out", str(studies), "--epochs", "1", cwd=tmp_path)
        assert result.returncode == 0, result.stderr
    else:
        for name in ("fashion-mnist-model.pt", "fashion-mnist-test.json"):
            shutil.copy(study.dir / name, studies / name)
    return tmp_path


@pytest.mark.parametrize("space", ["tutorial", "extended"])
def test_the_readme_recipe_loads_a_model_of_every_space(
        space: str, searched: Searched, searched_extended: Searched, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    study = searched if space == "tutorial" else searched_extended
    monkeypatch.chdir(_trained_in_studies(study, tmp_path))
    namespace: dict[str, object] = {}
    exec(recipe(), namespace)  # as written in README.md
    model = namespace["model"]
    assert isinstance(model, torch.nn.Module) and not model.training
    saved = torch.load("studies/fashion-mnist-model.pt", weights_only=True)
    state = model.state_dict()
    assert state.keys() == saved.keys()
    assert all(torch.equal(state[key], saved[key]) for key in saved)
    batch_norm = any(isinstance(m, torch.nn.BatchNorm1d) for m in model.modules())
    assert batch_norm == (space == "extended")  # the extended space fixes batch norm on
    assert model(torch.zeros(2, 1, 28, 28)).shape == (2, 10)


def test_train_prints_the_same_call_for_every_space(searched_extended: Searched) -> None:
    import json

    metrics = json.loads((searched_extended.dir / "fashion-mnist-test.json").read_text())
    assert metrics["load_with"].startswith("model.network.load_trained(")
