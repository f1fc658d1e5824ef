"""Each rendered pod's memory limit holds what its own settings need (the start-up memory budget):
a shipped overlay whose replica would exit 2 at start-up, or be OOM-killed, fails here first."""

from __future__ import annotations

import pytest

from consumer.service.preflight import client_configs, memory_budget
from tests.deploy.k8s import container
from tests.deploy.test_manifests import _pod_settings
from tests.deploy.tools import OVERLAYS, render

UNITS = {"Ki": 1 << 10, "Mi": 1 << 20, "Gi": 1 << 30, "Ti": 1 << 40}


def quantity(text: str) -> int:
    for suffix, factor in UNITS.items():
        if text.endswith(suffix):
            return int(float(text[: -len(suffix)]) * factor)
    return int(text)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_pod_memory_limit_holds_the_budget_of_its_settings(overlay, tmp_path):
    docs = render(overlay)
    _, settings = _pod_settings(docs, "training-filter-0", tmp_path)
    limit = quantity(container(docs)["resources"]["limits"]["memory"])
    budget = memory_budget(settings, client_configs(settings), (limit, f"{overlay} pod limit"))
    assert budget.problems() == [], budget.fields()
    # Head-room for what the budget does not count (held batches, the emitter's queue): at least 10 %.
    assert budget.need <= 0.9 * limit, budget.fields()
