"""Every benchmark module imports: bench/ is outside mypy, so a moved name would otherwise
only show when someone runs the benchmark."""

from __future__ import annotations

import importlib
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench"
# These load the peers' probe (shared/bench-peers) at import: they need that folder beside
# the checkout, which a clone of rota alone does not have.
NEEDS_PEERS = {"peer_apps", "probe_ceiling"}
OPTIONAL = {"matplotlib"}  # the `bench` extra, for plots only
MODULES = sorted(p.stem for p in BENCH.glob("*.py") if p.stem != "__init__")


def test_there_are_benchmarks() -> None:
    assert len(MODULES) >= 10


@pytest.mark.parametrize("name", MODULES)
def test_bench_module_imports(name: str) -> None:
    if name in NEEDS_PEERS and not (BENCH.parent.parent / "shared" / "bench-peers").is_dir():
        pytest.skip("needs shared/bench-peers beside the checkout")
    try:
        importlib.import_module(f"bench.{name}")
    except ModuleNotFoundError as exc:
        if exc.name not in OPTIONAL:
            raise
        pytest.skip(f"needs {exc.name} (pip install rota[bench])")
