"""The Lua scripts of the Redis store (``lua/*.lua``, key layout in ``lua/lib.lua``'s
header) joined into one Redis function library, loaded with ``FUNCTION LOAD``."""

from __future__ import annotations

import hashlib

from rota.store.named_queries import merge_named, read_text, split_named

# In load order: the code before a file's first "-- name:" marker (helpers, per-call
# state) is joined in this order, so a helper may use those of the files before it.
LIBRARY_FILES = (
    "lib.lua",  # key layout, per-call state, deferred writes, memo, fencing, begin()
    "attempts.lua",  # the attempt history of each job
    "jobs.lua",  # job records and transitions
    "worker.lua",  # nodes: register, heartbeat, claim (start_jobs), complete, release
    "placement.lua",  # pending pages, placement snapshot, assign, reserved slots
    "submit.lua",  # submit, cancel, retry_dead
    "leader.lua",  # leases, promote_due, reap, prune
    "flow.lua",  # resolve_dependencies
    "schedules.lua",  # periodic schedules
    "reads.lua",  # operator reads: active ids, pending newest first
)
PACKAGE = "rota.store.redis"


def load_library() -> tuple[str, str]:
    """The library's name (``rota_`` and a hash of its code, so versions never clash) and
    its code for ``FUNCTION LOAD``: the helpers of every file, then each script registered
    as the function ``<name>_<script>``, which starts with ``begin(keys, args)``."""
    helpers: list[str] = []
    scripts: list[dict[str, str]] = []
    for filename in LIBRARY_FILES:
        before, named = split_named(read_text(PACKAGE, f"lua/{filename}"))
        helpers.append(f"-- {filename}\n{before.strip()}\n")
        scripts.append(named)
    bodies = merge_named(scripts)
    joined = "\n".join(helpers) + "".join(f"-- name: {k}\n{v}\n" for k, v in bodies.items())
    name = "rota_" + hashlib.sha1(joined.encode()).hexdigest()[:12]
    code = [f"#!lua name={name}", *helpers]
    for script, body in bodies.items():
        code.append(
            f"redis.register_function('{name}_{script}', function(keys, args)\n"
            f"begin(keys, args)\n{body}\nend)\n"
        )
    return name, "\n".join(code)


LIBRARY, LIBRARY_CODE = load_library()
# No REPLACE: the library's name carries a hash of its code, so one already loaded under
# that name is this code. Redis refuses a second load before compiling anything ("already
# exists", ~0.15 ms here, against ~1.7 ms for a REPLACE that compiles the library again),
# so a fleet reconnecting at once after a store outage does not stall Redis recompiling it.
LOAD_LIBRARY = ("FUNCTION", "LOAD", LIBRARY_CODE)


def function_name(script: str) -> str:
    """The Redis function that runs script ``script`` (``FCALL`` it)."""
    return f"{LIBRARY}_{script}"


def already_loaded(error: Exception) -> bool:
    """Whether ``error`` is Redis refusing ``LOAD_LIBRARY`` because it has that library."""
    return "already exists" in str(error)


def missing_library(error: Exception) -> bool:
    """Whether ``error`` says the library is not loaded (a new or restarted Redis)."""
    return "Function not found" in str(error)
