"""The metadata keys datalake writes on the DIDs it governs (Rucio's JSON metadata plugin).

A module of its own, free of heavy imports, because readers (``pull``, ``status``) need the names without
loading the policy machinery."""

POLICY_KEY = "datalake_policy"  # the sharing policy's name
STATE_KEY = "datalake_state"  # "registering" until a registration has finished
TIER_KEY = "datalake_tier"  # public | collaboration | restricted | suspended, as the policy decides now
READERS_KEY = "datalake_readers"  # accounts and group:NAME that may read before release
SHARES_KEY = "datalake_shares"  # datalake share: with whom, by whom, until when, the tokens' ids
DERIVED_KEY = "datalake_derived_from"  # a derived dataset's input DIDs: it is never released before them
