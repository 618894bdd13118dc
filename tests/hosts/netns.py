"""Hosts as Linux network namespaces on one machine, and the ways to cut their links.

A :class:`Network` is a bridge in the root namespace with an address on a private /24
(``10.<a>.<b>.0/24``, picked at random among the ones no interface uses yet) and N
:class:`Host` s: each a namespace with a veth cable into the bridge and an address of its
own. Servers (Redis, a forwarder to PostgreSQL) listen on the bridge address, so every
host reaches them over its own cable, and a cut on one host leaves the others alone.

Cuts (:class:`Host` methods, undone by :meth:`Host.heal`):

- ``link_down``: the host's cable unplugged (``ip link set eth0 down``); sends fail at once.
- ``blackhole``: a blackhole route to the server address inside the host.
- ``drop``: nftables drops everything to and from the server address (a silent partition).
- ``reject``: nftables rejects it (TCP reset; ICMP for the rest).
- ``loss(percent)``: nftables drops ``numgen random mod 100 < percent`` of the packets
  each way (a flapping link).
- ``mute``: the host hears but cannot speak (outgoing packets dropped); ``deafen``: the
  reverse (incoming packets dropped).

nftables tables live inside the host's namespace, so they go with it. Every name carries
the prefix ``rotah`` (``rh`` for interfaces, 15 characters at most) and a random tag; the
owner's pid is written to ``STATE_DIR/<tag>``, and :func:`sweep` removes what a dead owner
left behind (namespaces, links, its server processes) without touching a live run's.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import os
import random
import shutil
import signal
import subprocess
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

NS_PREFIX = "rotah-"
LINK_PREFIX = "rh"
STATE_DIR = Path(os.environ.get("ROTA_HOSTS_STATE", "/run/rota-hosts"))
TABLE = "rotacut"


class NetnsUnavailable(RuntimeError):
    """Namespaces cannot be made here (not root, no ``ip netns``, no nft)."""


def sh(*argv: str, check: bool = True, input_: str | None = None) -> str:
    """Run a command; its stdout. A failure raises with its stderr."""
    done = subprocess.run(
        list(argv), capture_output=True, text=True, input=input_, timeout=30, check=False
    )
    if check and done.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)}: exit {done.returncode}: {done.stderr.strip()}")
    return done.stdout


def unavailable_reason() -> str | None:
    """Why hosts cannot be built here, or ``None`` when they can."""
    if os.geteuid() != 0:
        return "network namespaces need root"
    for tool in ("ip", "nft"):
        if shutil.which(tool) is None:
            return f"`{tool}` is not installed"
    probe = f"rotaprobe-{uuid.uuid4().hex[:6]}"
    try:
        sh("ip", "netns", "add", probe)
    except (RuntimeError, OSError) as exc:
        return f"`ip netns add` failed: {exc}"
    try:
        sh("ip", "-n", probe, "link", "set", "lo", "up")
        sh("ip", "netns", "exec", probe, "nft", "list", "tables")
    except (RuntimeError, OSError) as exc:
        return f"`ip netns exec` / nft failed: {exc}"
    finally:
        sh("ip", "netns", "del", probe, check=False)
    return None


def _used_networks() -> list[ipaddress.IPv4Network]:
    out = sh("ip", "-4", "-o", "addr", "show")
    nets = []
    for line in out.splitlines():
        parts = line.split()
        if "inet" in parts:
            nets.append(ipaddress.IPv4Interface(parts[parts.index("inet") + 1]).network)
    return nets


def _pick_subnet() -> ipaddress.IPv4Network:
    used = _used_networks()
    rng = random.SystemRandom()
    for _ in range(200):
        net = ipaddress.IPv4Network(f"10.{rng.randint(200, 250)}.{rng.randint(1, 254)}.0/24")
        if not any(net.overlaps(u) for u in used):
            return net
    raise RuntimeError("no free 10.x.y.0/24 test subnet")


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@dataclass
class Host:
    """One namespace with one cable (``eth0``) into the network's bridge."""

    name: str  # short name, e.g. "w1"
    netns: str
    veth: str  # the cable's end in the root namespace
    address: str
    network: Network
    cuts: list[str] = field(default_factory=list)

    def run(self, *argv: str, check: bool = True) -> str:
        return sh("ip", "netns", "exec", self.netns, *argv, check=check)

    def prefix(self) -> list[str]:
        """argv prefix that runs a command on this host."""
        return ["ip", "netns", "exec", self.netns]

    # ---- cuts ------------------------------------------------------------------------
    def link_down(self) -> None:
        sh("ip", "-n", self.netns, "link", "set", "eth0", "down")
        self.cuts.append("link")

    def blackhole(self, target: str | None = None) -> None:
        sh(
            "ip",
            "-n",
            self.netns,
            "route",
            "add",
            "blackhole",
            f"{target or self.network.gateway}/32",
        )
        self.cuts.append(f"blackhole {target or self.network.gateway}")

    def _nft(self, rules: list[str]) -> None:
        """Replace this host's cut table with one holding ``rules`` (each ``chain: rule``)."""
        script = [f"table inet {TABLE} {{"]
        for chain, hook in (("out", "output"), ("in", "input")):
            script.append(f"  chain {chain} {{ type filter hook {hook} priority 0; policy accept;")
            script += [f"    {rule}" for c, rule in (r.split(": ", 1) for r in rules) if c == chain]
            script.append("  }")
        script.append("}")
        self._nft_clear()
        sh("ip", "netns", "exec", self.netns, "nft", "-f", "-", input_="\n".join(script) + "\n")
        self.cuts.append("nft")

    def _nft_clear(self) -> None:
        sh("ip", "netns", "exec", self.netns, "nft", "delete", "table", "inet", TABLE, check=False)

    def drop(self, target: str | None = None) -> None:
        """Silent partition from ``target`` (the server address by default)."""
        t = target or self.network.gateway
        self._nft([f"out: ip daddr {t} drop", f"in: ip saddr {t} drop"])

    def reject(self, target: str | None = None) -> None:
        """Every packet to ``target`` refused on its way out: TCP gets a reset (connects
        fail at once, open connections break on their next send), the rest an ICMP error.
        (No input rule: it would refuse the very resets this one makes.)"""
        t = target or self.network.gateway
        self._nft(
            [
                f"out: ip daddr {t} meta l4proto tcp reject with tcp reset",
                f"out: ip daddr {t} reject",
            ]
        )

    def loss(self, percent: int, target: str | None = None) -> None:
        """Drop ``percent`` % of the packets each way, at random (a flapping link)."""
        t = target or self.network.gateway
        self._nft(
            [
                f"out: ip daddr {t} numgen random mod 100 < {percent} drop",
                f"in: ip saddr {t} numgen random mod 100 < {percent} drop",
            ]
        )

    def mute(self, target: str | None = None) -> None:
        """The host hears ``target`` but cannot speak to it."""
        self._nft([f"out: ip daddr {target or self.network.gateway} drop"])

    def deafen(self, target: str | None = None) -> None:
        """The host speaks to ``target`` but hears nothing back."""
        self._nft([f"in: ip saddr {target or self.network.gateway} drop"])

    def heal(self) -> None:
        """Undo every cut on this host."""
        self._nft_clear()
        sh("ip", "-n", self.netns, "link", "set", "eth0", "up", check=False)
        for cut in self.cuts:
            if cut.startswith("blackhole "):
                dst = cut.split()[1]
                sh("ip", "-n", self.netns, "route", "del", "blackhole", f"{dst}/32", check=False)
        self.cuts.clear()


@dataclass
class Network:
    """A bridge on a private /24 and the hosts plugged into it."""

    tag: str
    subnet: ipaddress.IPv4Network
    bridge: str
    hosts: dict[str, Host] = field(default_factory=dict)
    pids: list[int] = field(default_factory=list)  # servers started for this network

    @property
    def gateway(self) -> str:
        """The bridge's address: where the servers listen."""
        return str(self.subnet.network_address + 1)

    @classmethod
    def create(cls, host_names: list[str]) -> Network:
        reason = unavailable_reason()
        if reason is not None:
            raise NetnsUnavailable(reason)
        sweep()
        tag = uuid.uuid4().hex[:6]
        net = cls(tag, _pick_subnet(), f"{LINK_PREFIX}{tag}b")
        net._save()
        try:
            sh("ip", "link", "add", net.bridge, "type", "bridge")
            sh("ip", "addr", "add", f"{net.gateway}/24", "dev", net.bridge)
            sh("ip", "link", "set", net.bridge, "up")
            for i, name in enumerate(host_names):
                net.add_host(name, i)
        except BaseException:
            net.destroy()
            raise
        return net

    def add_host(self, name: str, index: int) -> Host:
        netns = f"{NS_PREFIX}{self.tag}-{name}"
        veth = f"{LINK_PREFIX}{self.tag}v{index}"
        peer = f"{LINK_PREFIX}{self.tag}p{index}"
        address = str(self.subnet.network_address + 10 + index)
        sh("ip", "netns", "add", netns)
        host = Host(name, netns, veth, address, self)
        self.hosts[name] = host
        sh("ip", "link", "add", veth, "type", "veth", "peer", "name", peer)
        sh("ip", "link", "set", veth, "master", self.bridge)
        sh("ip", "link", "set", veth, "up")
        sh("ip", "link", "set", peer, "netns", netns)
        sh("ip", "-n", netns, "link", "set", peer, "name", "eth0")
        sh("ip", "-n", netns, "addr", "add", f"{address}/24", "dev", "eth0")
        sh("ip", "-n", netns, "link", "set", "eth0", "up")
        sh("ip", "-n", netns, "link", "set", "lo", "up")
        return host

    def add_pid(self, pid: int) -> None:
        self.pids.append(pid)
        self._save()

    def _save(self) -> None:
        STATE_DIR.mkdir(parents=True, exist_ok=True)
        state = {"owner": os.getpid(), "pids": self.pids}
        (STATE_DIR / self.tag).write_text(json.dumps(state))

    def destroy(self) -> None:
        """Remove every process in the hosts, the namespaces, the links and the state."""
        for host in self.hosts.values():
            _kill_netns_pids(host.netns)
        _kill_pids(self.pids)
        for host in self.hosts.values():
            sh("ip", "netns", "del", host.netns, check=False)
            sh("ip", "link", "del", host.veth, check=False)
        sh("ip", "link", "del", self.bridge, check=False)
        with contextlib.suppress(FileNotFoundError):
            (STATE_DIR / self.tag).unlink()


def _kill_pids(pids: list[int]) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)
    for pid in pids:  # reap our own children
        with contextlib.suppress(ChildProcessError, OSError):
            os.waitpid(pid, os.WNOHANG)


def _kill_netns_pids(netns: str) -> None:
    for _ in range(3):
        pids = [int(p) for p in sh("ip", "netns", "pids", netns, check=False).split()]
        if not pids:
            return
        _kill_pids(pids)
        time.sleep(0.1)


def sweep() -> list[str]:
    """Remove what runs whose owner is gone left behind (names with our prefix); the
    names removed. A live owner's network is left alone."""
    live: set[str] = set()
    removed: list[str] = []
    if STATE_DIR.exists():
        for state_file in STATE_DIR.iterdir():
            try:
                state = json.loads(state_file.read_text())
            except (OSError, ValueError):
                state = {"owner": 0, "pids": []}
            if _pid_alive(int(state.get("owner", 0))):
                live.add(state_file.name)
                continue
            _kill_pids([int(p) for p in state.get("pids", [])])
            with contextlib.suppress(FileNotFoundError):
                state_file.unlink()
    for netns in sh("ip", "netns", "list", check=False).split("\n"):
        name = netns.split(" ")[0]
        if not name.startswith(NS_PREFIX):
            continue
        tag = name[len(NS_PREFIX) :].split("-")[0]
        if tag in live:
            continue
        _kill_netns_pids(name)
        sh("ip", "netns", "del", name, check=False)
        removed.append(name)
    for line in sh("ip", "-o", "link", "show", check=False).splitlines():
        ifname = line.split(":")[1].strip().split("@")[0]
        tag = ifname[2:8]
        ours = ifname.startswith(LINK_PREFIX) and len(ifname) >= 9
        if ours and tag not in live and all(c in "0123456789abcdef" for c in tag):
            sh("ip", "link", "del", ifname, check=False)
            removed.append(ifname)
    return removed
