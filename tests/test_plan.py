"""``lmgc experiments`` plans (lmgc.eval.plan): the two presets and their argument errors."""

from __future__ import annotations

import pytest

from lmgc.errors import DatasetNotFoundError, InputError
from lmgc.eval.plan import PAPER_SERIALIZATIONS, Sample, build_plan


def test_quick_plan_is_the_papers_setup_made_small() -> None:
    plan = build_plan(True)
    assert plan.models == ("smollm2-135m",) and plan.serializations == PAPER_SERIALIZATIONS
    assert plan.arch_runs == ("convnet-mnist", "vgg16-mnist", "resnet18-mnist", "vit-mnist")
    assert plan.dataset_runs == ("convnet-mnist", "convnet-fashion-mnist")
    assert plan.main_run == "convnet-mnist" and len(plan.runs) == 5
    assert plan.sample == Sample(2, 1, 512, 0)
    assert (plan.kind("table1"), plan.kind("own"), plan.kind("separators")) == (
        "coded", "coded", "estimate")
    assert all(r.steps == 61 and r.checkpoints == 4 for r in plan.runs)


def test_full_plan_has_the_papers_sizes_and_codes_everything_it_can(tmp_path) -> None:
    plan = build_plan(False, models=["my-model"], data_dirs={"cifar10": str(tmp_path)})
    assert plan.models == ("smollm2-135m", "gemma3-270m", "my-model")
    assert all(r.width is None and r.checkpoints == 10 and r.every == 400 for r in plan.runs)
    assert plan.dataset_runs == ("convnet-mnist", "convnet-fashion-mnist", "convnet-cifar10")
    assert plan.sample == Sample(None, 2, 2048, 0)
    assert plan.kind("archs") == "coded" and plan.kind("group_bytes") == "estimate"


@pytest.mark.parametrize(("kwargs", "error", "message"), [
    ({"window_bytes": 100}, InputError, "multiple of the 512-byte chunk, got 100"),
    ({"data_dirs": {"imagenet": "."}}, InputError, "unknown dataset 'imagenet'"),
    ({"data_dirs": {"cifar10": "/no/such/folder"}}, DatasetNotFoundError, "not a folder"),
    ({"arch_dataset": "svhn"}, InputError, "unknown dataset 'svhn'"),
])
def test_bad_plan_arguments_raise_typed_errors(kwargs, error, message) -> None:
    with pytest.raises(error, match=message):
        build_plan(True, **kwargs)
