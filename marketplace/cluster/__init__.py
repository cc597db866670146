"""A replicated marketplace on one machine (C{make cluster}).

Every host is a Linux network namespace with an address of its own on a
private bridge, so a whole host can be killed or cut off: three database
hosts (PostgreSQL under Patroni, with a three-member etcd), and a host for
each buyer, seller and payments daemon.  Needs root.

  - L{topology}: the plan (hosts, addresses, Patroni and etcd settings,
    connection strings), plain data with no side effects;
  - L{hosts}: network namespaces, and processes started and killed in them;
  - L{launch}: bringing the plan up in order, waiting for each part, and
    taking it down;
  - L{cli}: the C{marketplace-cluster} command.
"""
