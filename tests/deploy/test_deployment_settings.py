"""The deployment's settings are declared once (consumer/operations/settings_deployment.py) and agree
with the settings table: the env files the kustomizations read are what `make docs` writes from the
declarations, no kustomization sets a TF_ variable of its own, each rendered ConfigMap holds exactly
the declared values, and every TF_ variable a rendered pod sees is a setting or a librdkafka
pass-through."""

from __future__ import annotations

import pytest
import yaml

from consumer.devtools.docs import env_files
from consumer.operations import kafka_settings
from consumer.operations.settings import BY_NAME, PREFIX
from consumer.operations.settings_deployment import BASE, ENV_FILES, problems
from tests.deploy.k8s import container_environment, generated
from tests.deploy.tools import DEPLOY, OVERLAYS, REPO, render

KUSTOMIZE = DEPLOY / "kubernetes"
# The env files each overlay merges, in the order kustomize applies them (the overlay's, then its
# components'; prod-* take prod's, which has none).
MERGED = {
    "dev": [BASE, "overlays/dev/training-filter.env", "components/shadow-policy/training-filter.env"],
    "prod": [BASE],
    "prod-exactly-once": [BASE, "components/exactly-once/training-filter.env"],
    "prod-opt-in": [BASE, "components/opt-in-consent/training-filter.env"],
}


def test_the_env_files_are_what_make_docs_writes_from_the_declarations():
    assert env_files.stale(REPO) == [], "run `make docs`"


def test_the_declared_values_agree_with_the_settings_table():
    assert problems() == []


def _settings_generators(kustomization: dict) -> list[dict]:
    return [g for g in kustomization.get("configMapGenerator", []) if g["name"] == "training-filter"]


def test_the_kustomizations_read_the_declared_env_files_and_set_no_variable_of_their_own():
    declared = {f.path for f in ENV_FILES}
    read = set()
    for path in sorted(KUSTOMIZE.rglob("kustomization.yaml")):
        for generator in _settings_generators(yaml.safe_load(path.read_text())):
            where = path.relative_to(KUSTOMIZE)
            assert "literals" not in generator, f"{where}: declare its settings in settings_deployment.py"
            assert generator["envs"] == ["training-filter.env"], where
            read.add(str(path.parent.relative_to(KUSTOMIZE) / "training-filter.env"))
    assert read == declared


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_rendered_configmap_holds_the_declared_values(overlay):
    expected: dict[str, str] = {}
    by_path = {f.path: f for f in ENV_FILES}
    for path in MERGED[overlay]:
        expected.update({e.var: e.written() for e in by_path[path].entries})
    assert generated(render(overlay), "ConfigMap", "training-filter")["data"] == expected


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_tf_variable_of_the_rendered_pod_is_a_setting_or_a_passthrough(overlay):
    secrets = {("training-filter", "password"): "a-password"}
    env = container_environment(render(overlay), "training-filter-0", secrets)
    passthrough = tuple(PREFIX + p for p in kafka_settings.SCOPES)
    unknown = [v for v in env if v.startswith(PREFIX) and v.removeprefix(PREFIX) not in BY_NAME]
    assert [v for v in unknown if not v.startswith(passthrough)] == []
