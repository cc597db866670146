"""A replicated marketplace on one machine (C{make cluster}).

Every host is a Linux network namespace with an address of its own on a
private bridge, so a whole host can be killed or cut off: three database
hosts (PostgreSQL under Patroni, with a three-member etcd), and a host for
each buyer, seller and payments daemon.  Needs root.

  - L{settings}: the cluster's secrets and settings, made once, kept in a
    private file and reused;
  - L{render}: every file of every host (Patroni, etcd, the daemons'
    environment, systemd units) from a list of hosts: the same files for
    real hosts and for the namespaces;
  - L{topology}: the plan on this machine (hosts, addresses), plain data
    with no side effects;
  - L{hosts}: network namespaces, and processes started and killed in them;
  - L{launch}: bringing the plan up in order from the rendered files,
    waiting for each part, taking it down, bringing it back;
  - L{operate}: start, replace, switchover, roll (through Patroni's REST
    API where Patroni has a mechanism);
  - L{cli}: the C{marketplace-cluster} command.
"""
