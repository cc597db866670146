"""A DBA's planned and unplanned work on a running cluster, through
Patroni's own REST API wherever Patroni has a mechanism for it:

  - L{start_host}: a killed host back in service (a database node comes
    back as a replica, rewound with pg_rewind if it was the primary);
  - L{replace_host}: a database node whose data folder is gone, cloned
    again from the primary (Patroni's reinitialize);
  - L{switchover}: the primary handed over to a replica (Patroni's
    switchover: the old primary stops cleanly and releases its lease);
  - L{roll}: every frontend restarted one at a time (SIGTERM: it stops
    listening, answers what is in flight and exits; then started again and
    waited for until ready).
"""

import base64
import json
import shutil
import time
import urllib.error
import urllib.request
from typing import Callable, List, Optional

from marketplace.cluster import certs, hosts, launch
from marketplace.cluster.launch import ClusterError, wait_for
from marketplace.cluster.topology import Host, Plan

#: How long a database node may take to stream again, a frontend to be ready.
DATABASE_TIMEOUT = 60.0
FRONTEND_TIMEOUT = 30.0


def patroni_post(plan: Plan, host: Host, path: str, body: dict,
                 timeout: float = 30.0) -> tuple:
    """POST C{body} to Patroni's REST API on C{host}: (status, text)."""
    credentials = base64.b64encode(f"patroni:{plan.rest_password}".encode()).decode()
    request = urllib.request.Request(
        launch.patroni_url(host, path), data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json", "Authorization": f"Basic {credentials}"},
        method="POST")
    try:
        with urllib.request.urlopen(request, timeout=timeout,
                                    context=certs.client_context(str(plan.folder))) as answer:
            return answer.status, answer.read().decode(errors="replace")
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode(errors="replace")
    except OSError as e:
        return 0, str(e)


def _wait(plan: Plan, host: Host, what: str, check: Callable[[], bool], timeout: float,
          log: str) -> None:
    """L{wait_for}, and if it fails, the end of the host's log in the error."""
    try:
        wait_for(what, check, timeout)
    except ClusterError as e:
        raise launch.with_log_ends(e, plan, [host], log) from None


def _wait_streaming(plan: Plan, host: Host, timeout: float) -> None:
    _wait(plan, host, f"the database node on {host.name}",
          lambda: launch.streaming(plan, host), timeout, "patroni.log")


def _wait_ready(plan: Plan, host: Host, timeout: float) -> None:
    _wait(plan, host, f"the {host.role} daemon on {host.name}",
          lambda: launch.ready(plan, host), timeout, "daemon.out")


def _patroni_answers(plan: Plan, host: Host) -> bool:
    return launch.patroni_status(plan, host, "/health") != 0


def start_host(plan: Plan, host: Host, timeout: Optional[float] = None) -> float:
    """Start what is not running on C{host} and wait until it serves: a
    database node streaming (or primary), a frontend ready.  The seconds
    it took."""
    started = time.monotonic()
    if host.role == "database":
        if not hosts.pids(plan, host, "etcd"):
            launch._start_unit(plan, host, "etcd", "etcd.log")
        if not hosts.pids(plan, host, "patroni"):
            launch._start_unit(plan, host, "patroni", "patroni.log")
        _wait_streaming(plan, host, timeout or DATABASE_TIMEOUT)
    else:
        if not hosts.pids(plan, host):
            launch.start_frontend(plan, host)
        _wait_ready(plan, host, timeout or FRONTEND_TIMEOUT)
    return time.monotonic() - started


def replace_host(plan: Plan, host: Host, timeout: Optional[float] = None) -> float:
    """Clone database node C{host} again from the primary and wait until it
    streams; the seconds it took.  With Patroni running there, through its
    reinitialize (which wipes what is left of the data folder); with
    nothing running there, Patroni is started on an empty data folder,
    which it clones the same way."""
    if host.role != "database":
        raise ClusterError(f"{host.name} is not a database host")
    leader = launch.primary(plan)
    if leader is None or leader == host:
        raise ClusterError(f"{host.name} can only be cloned from another node, the primary:"
                           " switch over first" if leader == host else "there is no primary")
    started = time.monotonic()
    if _patroni_answers(plan, host):
        deadline = time.monotonic() + 30
        while True:
            status, text = patroni_post(plan, host, "/reinitialize", {"force": True})
            if status == 200:
                break
            if time.monotonic() > deadline:
                raise ClusterError(f"Patroni on {host.name} refused to reinitialize: {text}")
            time.sleep(0.5)
    else:
        data = plan.folder / host.name / "postgresql"
        if data.exists():
            shutil.rmtree(data)
        if not hosts.pids(plan, host, "etcd"):
            launch._start_unit(plan, host, "etcd", "etcd.log")
        launch._start_unit(plan, host, "patroni", "patroni.log")
    # Streaming, and not the old data: the reinitialize takes a moment to
    # stop what ran there.
    time.sleep(1.0)
    _wait_streaming(plan, host, timeout or DATABASE_TIMEOUT)
    return time.monotonic() - started


def switchover(plan: Plan, to: Optional[Host] = None, timeout: float = 60.0) -> Host:
    """Hand the primary's role over to C{to} (by default a replica Patroni
    picks: the synchronous standby) and wait until the new primary has a
    synchronous standby again; the new primary."""
    leader = launch.primary(plan)
    if leader is None:
        raise ClusterError("there is no primary to switch over from")
    if to == leader:
        raise ClusterError(f"{to.name} is the primary already")
    body = {"leader": leader.name}
    if to is not None:
        body["candidate"] = to.name
    status, text = patroni_post(plan, leader, "/switchover", body)
    if status != 200:
        raise ClusterError(f"Patroni refused the switchover: {text.strip()}")

    def done() -> bool:
        now = launch.primary(plan)
        return (now is not None and now != leader and (to is None or now == to)
                and launch.synchronous_standby(plan) is not None)

    wait_for("the switchover", done, timeout)
    return launch.primary(plan)


def roll(plan: Plan, say: Callable[[str], None] = lambda _: None,
         grace: float = 30.0) -> List[float]:
    """Restart every frontend, one at a time: SIGTERM (it stops listening,
    answers what is in flight, closes its connections and exits), start,
    wait until ready.  The seconds each took."""
    took = []
    for role in ("payments", "seller", "buyer"):
        for host in plan.by_role(role):
            started = time.monotonic()
            hosts.stop(plan, host, grace=grace)
            launch.start_frontend(plan, host)
            _wait_ready(plan, host, FRONTEND_TIMEOUT)
            took.append(time.monotonic() - started)
            say(f"{host.name} restarted and ready in {took[-1]:.1f} s")
    return took
