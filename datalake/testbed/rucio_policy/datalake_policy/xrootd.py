"""Rucio's xrootd protocol (``xrdcp``/``xrdfs``), authenticating as the environment says.

Rucio's ``rucio.rse.protocols.xrootd.Default`` (and ``gfal.Default``) force GSI on the XRootD tools they run
unless there is a token; the testbed's servers take shared-secret (sss) keys. Without a token this leaves
``XrdSecPROTOCOL``/``XrdSecSSSKT`` to the caller's environment (``datalake testbed env`` sets both), so the stock
``rucio upload``/``download`` authenticate as the account. RSEs name it ``impl: datalake_policy.xrootd.Default``;
like every policy package, it must be importable by clients too (``datalake testbed install`` does that).
"""

from rucio.rse.protocols import xrootd


class Default(xrootd.Default):
    """xrootd.Default with the environment's XRootD authentication (tokens still go as ztn)."""

    @property
    def _auth_env(self) -> dict[str, str]:
        return super()._auth_env if self.auth_token else {}
