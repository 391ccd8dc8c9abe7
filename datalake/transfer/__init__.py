"""The transfer orchestrator: a durable queue of file transfers (``store``), the engine that runs them between
storage endpoints with per-link concurrency and retries (``engine``, copying through ``datalake.storage``), the
per-link optimizer (``optimizer``), the FTS3-compatible REST service Rucio's conveyor submits to (``service``,
``routes``, ``fts3``), and client-side replication on the same engine (``replicate``)."""
