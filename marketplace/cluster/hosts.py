"""Hosts as Linux network namespaces on one bridge, and their processes.

Each host gets a namespace with a veth link to the bridge in the machine's
own namespace, where the clients run.  Killing a host sends SIGKILL to
every process in its namespace; cutting it takes its link down.
"""

import os
import signal
import subprocess
import time
from pathlib import Path
from typing import List, Optional, Sequence

from marketplace.cluster.topology import Host, Plan


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(["ip", *args], check=check, capture_output=True, text=True)


def _link(plan: Plan, host: Host) -> str:
    """The machine-side name of a host's veth link (at most 15 characters)."""
    return f"mp{plan.cluster_id}{host.name}"[:15]


def claim_bridge(plan: Plan) -> bool:
    """Make the plan's bridge; False if it exists (another cluster's)."""
    return _ip("link", "add", plan.bridge, "type", "bridge", check=False).returncode == 0


def create_network(plan: Plan) -> None:
    """The bridge (unless L{claim_bridge} made it) and one namespace per
    host, each with its address."""
    if not network_exists(plan):
        _ip("link", "add", plan.bridge, "type", "bridge")
    _ip("addr", "add", f"{plan.gateway}/24", "dev", plan.bridge)
    _ip("link", "set", plan.bridge, "up")
    for host in plan.hosts:
        namespace = host.namespace(plan.cluster_id)
        link = _link(plan, host)
        _ip("netns", "add", namespace)
        _ip("link", "add", link, "type", "veth", "peer", "name", "eth0", "netns", namespace)
        _ip("link", "set", link, "master", plan.bridge)
        _ip("link", "set", link, "up")
        _ip("-n", namespace, "addr", "add", f"{host.address}/24", "dev", "eth0")
        _ip("-n", namespace, "link", "set", "eth0", "up")
        _ip("-n", namespace, "link", "set", "lo", "up")


def delete_network(plan: Plan) -> None:
    """Remove the namespaces and the bridge (whatever of them exists)."""
    for host in plan.hosts:
        _ip("netns", "del", host.namespace(plan.cluster_id), check=False)
        _ip("link", "del", _link(plan, host), check=False)
    _ip("link", "del", plan.bridge, check=False)


def network_exists(plan: Plan) -> bool:
    """Whether this plan's bridge is there."""
    return _ip("link", "show", plan.bridge, check=False).returncode == 0


def start(
    plan: Plan,
    host: Host,
    command: Sequence[str],
    log: Path,
    user: Optional[str] = None,
    environment: Optional[dict] = None,
) -> int:
    """Start C{command} on C{host} in the background; its pid.  Output goes
    to C{log}, and the command runs in its folder.  With C{user}, the
    command runs as that system user; C{environment} is added to this
    process's environment."""
    prefix = ["ip", "netns", "exec", host.namespace(plan.cluster_id)]
    if user is not None:
        import pwd

        entry = pwd.getpwnam(user)
        prefix += [
            "setpriv", f"--reuid={entry.pw_uid}", f"--regid={entry.pw_gid}",
            "--init-groups", "--",
        ]
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as output:
        process = subprocess.Popen(
            [*prefix, *command],
            stdin=subprocess.DEVNULL,
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            cwd=log.parent,
            env={**os.environ, "HOME": str(log.parent), "PYTHONUNBUFFERED": "1",
                 **(environment or {})},
        )
    return process.pid


def _command_line(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def pids(plan: Plan, host: Host, program: Optional[str] = None) -> List[int]:
    """Every process running in a host's namespace (only those whose
    command line names C{program}, if given)."""
    result = _ip("netns", "pids", host.namespace(plan.cluster_id), check=False)
    found = [int(word) for word in result.stdout.split()]
    if program is not None:
        found = [pid for pid in found if f"/{program} " in _command_line(pid)]
    return found


def kill(plan: Plan, host: Host, sig: int = signal.SIGKILL,
         program: Optional[str] = None) -> List[int]:
    """Send C{sig} to every process of C{host} (or of its C{program});
    the pids signalled."""
    signalled = []
    for pid in pids(plan, host, program):
        try:
            os.kill(pid, sig)
            signalled.append(pid)
        except ProcessLookupError:
            pass
    return signalled


def stop(plan: Plan, host: Host, grace: float = 10.0, program: Optional[str] = None) -> None:
    """SIGTERM every process of C{host} (or only C{program}: Patroni stops
    its PostgreSQL itself), then SIGKILL what is left after C{grace}
    seconds."""
    stop_together(plan, [host], grace, program)


def stop_together(plan: Plan, several: Sequence[Host], grace: float = 10.0,
                  program: Optional[str] = None) -> None:
    """L{stop} on several hosts at once."""
    for host in several:
        kill(plan, host, signal.SIGTERM, program)
    deadline = time.monotonic() + grace
    while any(pids(plan, h, program) for h in several) and time.monotonic() < deadline:
        time.sleep(0.1)
    while any(pids(plan, h, program) for h in several):
        for host in several:
            kill(plan, host, signal.SIGKILL, program)
        time.sleep(0.1)


def cut(plan: Plan, host: Host, up: bool = False) -> None:
    """Take a host's link down (or, with C{up}, back up)."""
    _ip("link", "set", _link(plan, host), "up" if up else "down")
