"""What open connections cost a service: resident memory of the processes
that listen on a port, before and after opening many idle connections."""

import os
from pathlib import Path
from typing import Dict, List, Set

from twisted.internet import defer

from marketplace.clientlib import BuyerClient, SellerClient, open_clients


def _listening_inodes(port: int) -> Set[str]:
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            local, state, inode = fields[1], fields[3], fields[9]
            if state == "0A" and int(local.rsplit(":", 1)[1], 16) == port:
                inodes.add(inode)
    return inodes


def listening_pids(port: int) -> List[int]:
    """The processes (of this user, as /proc shows them) that hold a socket
    listening on TCP C{port}."""
    wanted = {f"socket:[{inode}]" for inode in _listening_inodes(port)}
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            for fd in (entry / "fd").iterdir():
                if os.readlink(fd) in wanted:
                    pids.append(int(entry.name))
                    break
        except OSError:
            continue
    return sorted(pids)


def resident_mb(pid: int) -> float:
    """VmRSS of a process in MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise ValueError(f"no VmRSS for process {pid}")


async def idle_connections(
    role: str, endpoint: str, port: int, count: int, reactor, settle: float = 1.0
) -> Dict[str, object]:
    """Open C{count} idle connections to one service and measure the
    resident memory of its processes before and with them."""
    from twisted.internet import task

    pids = listening_pids(port)
    before = {pid: resident_mb(pid) for pid in pids}
    client_class = SellerClient if role == "seller" else BuyerClient
    clients = []
    # A few hundred at a time, so the listen backlog never overflows.
    for start in range(0, count, 200):
        clients += await open_clients(
            client_class, min(200, count - start), endpoint, reactor
        )
    await task.deferLater(reactor, settle, lambda: None)
    during = {pid: resident_mb(pid) for pid in pids}
    await defer.gatherResults([c.close() for c in clients])
    return {
        "role": role,
        "connections": count,
        "pids": pids,
        "rss_before_mb": before,
        "rss_with_connections_mb": during,
        "max_rss_mb": max(during.values()) if during else None,
    }


__all__ = ["listening_pids", "resident_mb", "idle_connections"]
