"""PostgreSQL plumbing: the connection pools, the embedded default server, the schema, outages."""
