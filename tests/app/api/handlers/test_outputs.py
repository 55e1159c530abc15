"""Model outputs → answers (app.api.handlers.outputs)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from app.api.handlers.outputs import finite_outputs, labels, ranked, task
from app.core.errors import ApiError


def _entry(labels: list[str], config: dict | None = None) -> SimpleNamespace:
    return SimpleNamespace(name="m", labels=labels, config=config or {})


@pytest.mark.parametrize(
    ("names", "count", "expected"),
    [(["a", "b", "c"], 3, ["a", "b", "c"]), (["a", "b"], 3, ["0", "1", "2"]), ([], 2, ["0", "1"])],
)
def test_labels_are_the_checkpoints_or_indices(names: list[str], count: int, expected: list[str]):
    assert labels(_entry(names), count) == expected  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("config", "expected"), [({}, "classification"), ({"task": "regression"}, "regression")]
)
def test_task_defaults_to_classification(config: dict, expected: str) -> None:
    assert task(_entry([], config)) == expected  # type: ignore[arg-type]


def test_ranked_is_most_probable_first_with_label_and_index() -> None:
    probabilities = torch.rand(7, generator=torch.Generator().manual_seed(4)).softmax(-1)
    names = [f"c{i}" for i in range(7)]
    out = ranked(probabilities, names, 3)
    order = probabilities.argsort(descending=True)[:3].tolist()
    assert [p.index for p in out] == order
    assert [p.label for p in out] == [names[i] for i in order]
    assert [p.probability for p in out] == pytest.approx(probabilities[order].tolist())


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_non_finite_outputs_are_a_422(bad: float) -> None:
    outputs = torch.randn(2, 3)
    outputs[1, 2] = bad
    with pytest.raises(ApiError) as err:
        finite_outputs(outputs, "m")
    assert err.value.status_code == 422 and "model 'm' gave non-finite outputs" in err.value.message


def test_finite_outputs_pass_unchanged() -> None:
    outputs = torch.randn(2, 3)
    assert finite_outputs(outputs, "m") is outputs
