"""WLCG tokens (OAuth2 JWTs after the WLCG Common JWT Profile), as the ESCAPE lake authenticates: finding the
user's token as the WLCG Bearer Token Discovery rules say (``discovery``), and what a token says about itself
and allows (``token``). A token's value is never shown: not in a repr, a log line, an error or ``--json``."""

from datalake.tokens.discovery import Discovered, discover
from datalake.tokens.token import Token, allows

__all__ = ["Discovered", "Token", "allows", "discover"]
