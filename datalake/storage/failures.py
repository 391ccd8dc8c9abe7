"""What went wrong with a file on storage, as exception classes every backend raises and every caller catches.

Each backend maps its own codes (XRootD's ``kXR_*`` errnos, gfal2's errnos and messages) to these once, at its
edge; callers decide by class, as uproot's sources and httpx's transports let their callers do:

    StorageFailure (a StorageError)
    ├── Missing       the file is not there                    pull: a bad replica; transfers: the next source
    ├── Corrupt       wrong size or checksum                   pull: a bad replica; transfers: blame the source
    ├── Unreachable   server, network or timeout               worth trying again later, or another server
    │   └── TooSlow   ... or slower than the least speed asked (a trickling link): another server, from the prefix
    ├── Rejected      the storage refused the request          retrying cannot help (bad request, no space)
    │   └── Denied    ... because of who asks                  (kXR_NotAuthorized, EACCES)
    ├── Exists        the destination exists, no overwrite asked
    ├── LocalDisk     our own disk failed                      no other replica helps
    └── Cancelled     we were asked to stop                    a partial copy stays for a resume

``destination`` says the failure is the destination's (a copy's target refused or missing its directory), not
the source's: trying another source cannot help then.
"""

from __future__ import annotations

from datalake.errors import StorageError


class StorageFailure(StorageError):
    kind = "failed"  # the word in reports (pull's attempts and bad replicas, --json)

    def __init__(self, message: str, *, destination: bool = False) -> None:
        super().__init__(message)
        self.destination = destination


class Missing(StorageFailure):
    kind = "missing"


class Corrupt(StorageFailure):
    kind = "corrupt"


class Unreachable(StorageFailure):
    kind = "unreachable"


class TooSlow(Unreachable):
    """The source answers, but slower than the caller can wait for: each read may end within XrdCl's request
    timeout while the whole copy would take hours."""

    kind = "slow"


class Rejected(StorageFailure):
    kind = "rejected"


class Denied(Rejected):
    kind = "denied"


class Exists(StorageFailure):
    kind = "exists"


class LocalDisk(StorageFailure):
    kind = "local"


class Cancelled(StorageFailure):
    kind = "cancelled"


def first_line(message: str | None) -> str:
    """The one line of a storage's message worth showing (clients append context lines and blanks)."""
    text = (message or "").strip()
    return text.splitlines()[0] if text else "no message"
