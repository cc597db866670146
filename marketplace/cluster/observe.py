"""What the primary says about its replicas and its connections during a
run: the figures docs/SCALING.md rests on (how stale a read replica is
under this load, how many server connections the frontends hold).

L{sample} asks the primary once (psycopg2, called in a thread);
L{summarise} turns the samples of a run into figures.
"""

import statistics
from typing import Dict, List

import psycopg2

#: Seconds between samples.
EVERY = 1.0

_REPLICAS = """
SELECT application_name, sync_state,
       extract(epoch FROM replay_lag), pg_wal_lsn_diff(pg_current_wal_lsn(), replay_lsn)
FROM pg_stat_replication
"""
_CONNECTIONS = """
SELECT host(client_addr), count(*) FROM pg_stat_activity
WHERE backend_type = 'client backend' AND client_addr IS NOT NULL
GROUP BY 1
"""


def sample(dsn: str) -> Dict:
    """Each replica's replay lag (seconds, None when it has caught up and
    nothing is in flight) and bytes behind, and the client connections by
    address, as the primary sees them now."""
    connection = psycopg2.connect(dsn)
    try:
        with connection.cursor() as cursor:
            cursor.execute(_REPLICAS)
            replicas = {
                name: {"sync": sync, "lag_s": None if lag is None else float(lag),
                       "behind_bytes": None if behind is None else int(behind)}
                for name, sync, lag, behind in cursor.fetchall()
            }
            cursor.execute(_CONNECTIONS)
            connections = {address: int(n) for address, n in cursor.fetchall()}
    finally:
        connection.close()
    return {"replicas": replicas, "connections": connections}


def summarise(samples: List[Dict], addresses: Dict[str, str]) -> Dict:
    """Per kind of replica (sync, async): the mean and largest replay lag
    in ms and bytes behind; per frontend host (C{addresses}: address to
    host name) the most server connections it held."""
    lags: Dict[str, List[float]] = {}
    behind: Dict[str, List[int]] = {}
    for s in samples:
        for replica in s["replicas"].values():
            kind = replica["sync"]
            lags.setdefault(kind, []).append(1000 * (replica["lag_s"] or 0.0))
            behind.setdefault(kind, []).append(replica["behind_bytes"] or 0)
    replicas = {
        kind: {"samples": len(values), "mean_lag_ms": statistics.fmean(values),
               "max_lag_ms": max(values), "max_behind_bytes": max(behind[kind])}
        for kind, values in lags.items()
    }
    connections: Dict[str, int] = {}
    for s in samples:
        for address, n in s["connections"].items():
            name = addresses.get(address, address)
            connections[name] = max(connections.get(name, 0), n)
    return {"replicas": replicas, "connections": connections}
