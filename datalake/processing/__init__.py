"""Columnar work near storage: ``process`` (a user's function over a dataset's events) and ``deliver`` (Parquet
skims written back to the lake), their pure cores (chunks, placement, merge, selection, the scheduling state
machine), the worker-side I/O (``columnar``) and the one Dask adapter (``cluster``)."""
