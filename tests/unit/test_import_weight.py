"""``import rota`` stays light: a producer never loads the worker's process pool."""

from __future__ import annotations

import json
import subprocess
import sys


def test_import_rota_loads_no_process_pool_nor_multiprocessing() -> None:
    code = (
        "import json, sys\n"
        "import rota\n"
        "from rota import Retry, Rota, JobCancelled, cancel_requested, chain, group\n"
        "print(json.dumps(sorted(sys.modules)))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    loaded = set(json.loads(out.stdout))
    assert "rota" in loaded and "rota.worker.cancel" in loaded
    heavy = {"rota.worker.pool", "rota.worker.child", "rota.worker.node", "multiprocessing"}
    assert not loaded & heavy, sorted(loaded & heavy)
    assert not any(name.startswith("multiprocessing.") for name in loaded)
