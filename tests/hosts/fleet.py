"""A :class:`~tests.acceptance.conftest.Fleet` whose processes live on hosts: each
``python -m rota ...`` is started through ``ip netns exec`` in the namespace of the host it
was placed on, and reaches the store over that host's own cable."""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from tests.acceptance.conftest import REPO, Fleet, Proc
from tests.hosts.netns import Host, Network

APP = "tests.hosts.apps:app"
_STAMP = re.compile(r"^(\d\d:\d\d:\d\d) ")


@dataclass
class HostFleet(Fleet):
    """Real rota processes, each on a host of ``net``."""

    net: Network | None = None
    placed: dict[str, Host] = field(default_factory=dict)

    def host(self, name: str) -> Host:
        assert self.net is not None
        return self.net.hosts[name]

    def start(self, name: str, args: Sequence[str], *, env: dict[str, str] | None = None) -> Proc:
        host = self.placed.get(name)
        if host is None:
            return super().start(name, args, env=env)
        if name in self.procs:
            raise ValueError(f"a process called {name!r} was already started")
        log = self.logs / f"{name}.log"
        out = log.open("ab")
        self._files.append(out)
        argv = [*host.prefix(), sys.executable, "-m", "rota", *args]
        popen = subprocess.Popen(
            argv,
            cwd=REPO,
            env=env if env is not None else self.env(name),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        proc = Proc(name, argv, popen, log)
        self.procs[name] = proc
        return proc

    def worker_on(self, host: str, name: str, **kwargs: Any) -> Proc:
        """A worker called ``name`` on ``host`` (the hosts app unless told)."""
        self.placed[name] = self.host(host)
        kwargs.setdefault("app", APP)
        return self.worker(name, **kwargs)

    def scheduler_on(self, host: str, name: str, **kwargs: Any) -> Proc:
        self.placed[name] = self.host(host)
        return self.scheduler(name, **kwargs)

    def log_lines_after(self, name: str, since: float, pattern: str) -> list[str]:
        """Lines of ``name``'s log stamped at or after ``since`` (epoch s, to the second
        of the log's ``HH:MM:SS`` stamps) matching ``pattern``."""
        found = []
        for line in self.log(name).splitlines():
            m = _STAMP.match(line)
            if m is None or not re.search(pattern, line):
                continue
            if stamp_to_epoch(m.group(1)) >= since - 1.0:  # stamps are whole seconds
                found.append(line)
        return found


def stamp_to_epoch(hms: str) -> float:
    """A log line's local ``HH:MM:SS`` as epoch seconds (today, or yesterday when that
    would be in the future)."""
    now = datetime.now()
    at = datetime.combine(now.date(), datetime.strptime(hms, "%H:%M:%S").time())
    if at > now + timedelta(minutes=1):
        at -= timedelta(days=1)
    return at.timestamp()
