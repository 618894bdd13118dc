"""The SQLite benchmark: ``python -m bench.sqlite`` is ``python -m bench.e2e --store sqlite``."""

from __future__ import annotations

import sys

from bench.e2e import main

if __name__ == "__main__":
    main(["--store", "sqlite", *sys.argv[1:]])
