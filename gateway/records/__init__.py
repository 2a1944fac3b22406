"""PostgreSQL records: the source of truth for virtual keys and the append-only spend ledger.

Loaded only when ``database.url`` (``GLM_GATEWAY_DATABASE_URL``) is set: nothing here is
imported otherwise, and ``psycopg`` is imported by :mod:`gateway.records.db` alone.

- :mod:`.migrations`: numbered, additive SQL, applied under an advisory lock.
- :mod:`.keystore`: key records in PostgreSQL.
- :mod:`.ledger`: spend rows queued in process, written in batches off the request path,
  spilled to a local file while PostgreSQL is away.
- :mod:`.service`: what a running gateway holds (key sync, ledger, status).
- :mod:`.spend`: the ``glm-gateway spend`` report.
"""
