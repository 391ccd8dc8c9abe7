"""The transfer orchestrator: a durable queue of file transfers (``store``), the engine that runs them between
storage endpoints with per-link concurrency and retries (``engine``), the copy backends (``backends``), the
per-link optimizer (``optimizer``), and the FTS3-compatible REST service Rucio's conveyor submits to (``fts3``)."""
