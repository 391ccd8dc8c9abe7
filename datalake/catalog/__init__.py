"""The catalog: Rucio, through one adapter (``rucio.Catalog``), configured as Rucio's own clients are
(``config.ClientConfig``), with the lookups built on it (``lookups``)."""

from datalake.catalog.config import ClientConfig
from datalake.catalog.lookups import File, Lookups, RucioCalls, batched
from datalake.catalog.rucio import Catalog, transient_retry, translated

__all__ = ["Catalog", "ClientConfig", "File", "Lookups", "RucioCalls", "batched", "transient_retry", "translated"]
