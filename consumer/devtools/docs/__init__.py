"""The documentation's generated tables: `make docs` (`python -m consumer.devtools.docs`) rewrites
every region between `<!-- generated: NAME -->` and `<!-- end generated -->` in the repository's
markdown from the code and the benchmark's JSON; `--check` only says which pages are stale (a unit
test does the same, so a stale table fails `make test`).

The regions: `settings`, `metrics` and `alerts` (docs/operating.md: SETTINGS, the metric
declarations checked against a real Metrics() registry, the Prometheus rule file),
`consent-capacity` (docs/policy.md) and the `bench-*` figures (docs/performance.md, from
tests/benchmarks/results/*.json). Besides the regions, `make docs` writes the deployment's env files
whole (env_files.py: deploy/kubernetes/**/training-filter.env from the deployment's settings)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from consumer.devtools.docs import figures, reference

ROOT = Path(__file__).resolve().parents[3]


def _consent_capacity(root: Path) -> str:
    from consumer.operations.settings import SETTINGS

    default = next(int(s.default or 0) for s in SETTINGS if s.name == "CONSENT_CAPACITY")
    return figures.consent_capacity(figures.load(root, "consents.json"), default)


GENERATORS: dict[str, Callable[[Path], str]] = {
    "settings": lambda root: reference.settings_table(),
    "metrics": lambda root: reference.metrics_table(),
    "alerts": reference.alerts_table,
    "consent-capacity": _consent_capacity,
    "bench-machine": lambda root: figures.machine(figures.load(root, "latest.json")),
    "bench-input": lambda root: figures.bench_input(figures.load(root, "latest.json")),
    "bench-pipelines": lambda root: figures.pipelines(figures.load(root, "latest.json")),
    "bench-targets": lambda root: figures.targets(figures.load(root, "latest.json")),
    "bench-stages": lambda root: figures.stages(figures.load(root, "latest.json")),
    "bench-optout-filter": lambda root: figures.optout_filter(figures.load(root, "latest.json")),
    "bench-bloom": lambda root: figures.bloom_candidates(figures.load(root, "bloom-candidates.json")),
    "bench-consent-set": lambda root: figures.consent_set(figures.load(root, "consents.json")),
    "bench-consent-set-notes": lambda root: figures.consent_set_notes(figures.load(root, "consents.json")),
    "bench-shadow": lambda root: figures.shadow_overhead(figures.load(root, "shadow.json")),
    "bench-opt-in": lambda root: figures.opt_in_service(figures.load(root, "opt-in.json")),
    "bench-receipts": lambda root: figures.receipts(
        figures.load(root, "receipts.json"), figures.load(root, "hot-loop-receipts.json")
    ),
    "bench-verify": lambda root: figures.verify(figures.load(root, "verify.json")),
    "bench-retractions": lambda root: figures.retractions(
        figures.load(root, "retractions.json"), figures.load(root, "hot-loop-changes.json")
    ),
}


def renderer(root: Path = ROOT) -> Callable[[str], str]:
    """NAME -> the region's content; each generator runs once however many pages use it."""
    cache: dict[str, str] = {}

    def render(name: str) -> str:
        if name not in GENERATORS:
            raise KeyError(f"no generator for region {name!r} (known: {', '.join(GENERATORS)})")
        if name not in cache:
            cache[name] = GENERATORS[name](root)
        return cache[name]

    return render
