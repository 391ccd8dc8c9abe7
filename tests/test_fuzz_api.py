"""Fuzzing the transfer service's REST API over real HTTP (cheroot on a free port, the engine not started):
malformed JSON, wrong types in every field of a submission, huge and deeply nested bodies, bytes that are not
UTF-8, wrong content types, bad job ids, unknown paths and methods. Every answer is a 4xx with a clear JSON error
(or a success for a request that is in fact valid), never a 5xx or a hang, and the service keeps serving.
Cases: 1,200 generated (max_examples 400 + 300 + 300 + 200), 529 systematic (every field x every
wrong value), 19 fixed."""

from __future__ import annotations

import http.client
import json
import socket
import threading
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

import pytest
from hypothesis import HealthCheck, Phase, event, given, settings
from hypothesis import strategies as st

from datalake.transfer import auth, config
from datalake.transfer.engine import Engine
from datalake.transfer.service import create_app
from datalake.transfer.store import Store

TOKENS = {"rucio": "rucio-token", "other": "other-token"}
TIMEOUT = 30  # seconds per request: any answer takes milliseconds; reaching it is a hang
PHASES = [Phase.explicit, Phase.reuse, Phase.generate, Phase.shrink]  # no tracer re-runs of failing cases
# the module's server is shared by every example on purpose (it must keep serving across all of them)
SHARED = [HealthCheck.function_scoped_fixture]


class Service:
    """The service on 127.0.0.1:<free port>, and its store (to see what a refused request left behind)."""

    def __init__(self, port: int, store: Store) -> None:
        self.port, self.store = port, store

    def call(
        self,
        method: str,
        path: str,
        body: bytes | None = None,
        headers: dict[str, str] | None = None,
        token: str | None = TOKENS["rucio"],
    ) -> tuple[int, Any]:
        """One request on a new connection: (status, the JSON answer or the raw bytes if not JSON)."""
        sent = {"Authorization": f"Bearer {token}"} if token else {}
        sent |= headers or {}
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=TIMEOUT)
        try:
            conn.request(method, path, body=body, headers=sent)
            reply = conn.getresponse()
            raw = reply.read()
        finally:
            conn.close()
        try:
            return reply.status, json.loads(raw)
        except ValueError:
            return reply.status, raw

    def submit(self, body: Any, token: str = TOKENS["rucio"]) -> tuple[int, Any]:
        return self.call("POST", "/jobs", json.dumps(body).encode(), {"Content-Type": "application/json"}, token)

    def files_stored(self) -> int:
        return sum(n for link in self.store.counts().values() for n in link.values())


@pytest.fixture(scope="module")
def service(tmp_path_factory) -> Iterator[Service]:
    from cheroot import wsgi

    tmp = tmp_path_factory.mktemp("fuzz-api")
    settings_ = config.ServiceSettings(database=tmp / "t.db", tokens={a: auth.digest(t) for a, t in TOKENS.items()})
    store = Store(settings_.database)
    app = create_app(store, Engine(store, settings_.engine()), settings_)
    server = wsgi.Server(("127.0.0.1", 0), app, numthreads=4, server_name="fuzz")
    server.prepare()
    thread = threading.Thread(target=server.serve, daemon=True)
    thread.start()
    yield Service(server.bind_addr[1], store)
    server.stop()
    thread.join(10)


def valid_submission(n: int = 2) -> dict[str, Any]:
    """Shaped like Rucio 41's FTS3 transfertool's POST /jobs body."""
    files = [
        {
            "sources": [f"root://a:1094//rucio/f{i}", f"root://c:1094//rucio/f{i}"],
            "destinations": [f"root://b:1094//rucio/f{i}"],
            "metadata": {"request_id": f"req{i}", "scope": "s", "name": f"f{i}", "src_rse": "XRD1", "dst_rse": "XRD2"},
            "filesize": 10,
            "checksum": "ADLER32:0a0b0c0d",
            "selection_strategy": "auto",
            "activity": "T0 Export",
        }
        for i in range(n)
    ]
    return {
        "files": files,
        "params": {
            "verify_checksum": "both",
            "copy_pin_lifetime": -1,
            "bring_online": None,
            "job_metadata": {"issuer": "rucio"},
            "overwrite": False,
            "priority": 3,
            "max_time_in_queue": None,
        },
    }


def assert_clear_refusal(status: int, answer: Any, limit: int = 100_000) -> None:
    """A 4xx whose JSON body says what is wrong (FTS3's error shape, or its per-job 'not found' shape); or, for a
    request HTTP itself refuses before the application sees it (e.g. ``GET //x``: an absolute URI), cheroot's
    one-line text."""
    assert 400 <= status < 500, (status, answer)
    if isinstance(answer, bytes):
        assert status == 400 and answer.strip() and len(answer.decode().splitlines()) == 1, answer
        return
    assert isinstance(answer, dict), answer
    message = answer.get("message") or answer.get("http_message")
    assert isinstance(message, str) and message.strip() and "Traceback" not in message, answer
    assert len(message) < limit, f"{len(message)} characters: {message[:200]}..."


def assert_healthy(service: Service) -> None:
    """The service still does its job: the version, who we are, a valid submission stored and read back."""
    assert service.call("GET", "/", token=None)[0] == 200
    status, who = service.call("GET", "/whoami")
    assert status == 200 and who["vos"] == ["rucio"]
    status, answer = service.submit(valid_submission(1))
    assert status == 200, answer
    status, job = service.call("GET", f"/jobs/{answer['job_id']}")
    assert status == 200 and job["job_state"] == "SUBMITTED" and len(job["files"]) == 1


# -- wrong types and values in every field of POST /jobs --------------------------------------------------------

NASTY_STRINGS = [
    "",
    " ",
    "nourl",
    "://",
    "root://",
    "root://a:1094//f\x00",
    "root://\ud800/f",
    "\udcff",
    "é☃",
    "x" * 5000,
    "ADLER32:",
    "ADLER32:xyz",
    "MD5:0a",
    "CRC32:1",
    "adler32:0A0B0C0D",
    "None",
    "both",
    "sometimes",
    "standard",
    "deterministic",
    "true",
    "1e400",
    "NaN",
    "-1",
    "../../etc/passwd",
    "a,b",
    "%00",
    "\n",
]
JSON_SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.sampled_from([0, -1, 2**31, 2**63, -(2**63) - 1, 10**100, 10**4000]),
    st.floats(),  # NaN and Infinity go out as Python's json writes them
    st.text(max_size=30),
    st.sampled_from(NASTY_STRINGS),
)
JSON_VALUES = st.recursive(
    JSON_SCALARS,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=10,
)
FIELDS = [
    ("files",),
    ("params",),
    ("files", 0),
    ("files", 0, "sources"),
    ("files", 0, "sources", 0),
    ("files", 0, "destinations"),
    ("files", 0, "destinations", 0),
    ("files", 0, "filesize"),
    ("files", 0, "checksum"),
    ("files", 0, "metadata"),
    ("files", 0, "metadata", "src_rse"),
    ("files", 0, "activity"),
    ("files", 1),
    ("params", "verify_checksum"),
    ("params", "overwrite"),
    ("params", "priority"),
    ("params", "multihop"),
    ("params", "bring_online"),
    ("params", "job_metadata"),
    ("params", "retry"),
    ("params", "id_generator"),
    ("params", "sid"),
    ("params", "copy_pin_lifetime"),
]


def put(doc: Any, path: tuple, value: Any, delete: bool) -> Any:
    parent = doc
    for part in path[:-1]:
        parent = parent[part]
    if not delete:
        parent[path[-1]] = value
    elif isinstance(parent, dict):
        parent.pop(path[-1], None)
    else:
        parent.pop(path[-1])
    return doc


@settings(max_examples=400, deadline=None, phases=PHASES, suppress_health_check=SHARED)
@given(changes=st.lists(st.tuples(st.sampled_from(FIELDS), JSON_VALUES, st.booleans()), min_size=1, max_size=3))
def test_submissions_with_wrong_types(service, changes):
    body = valid_submission()
    for path, value, delete in changes:
        try:
            body = put(body, path, value, delete)
        except (LookupError, TypeError, AttributeError):  # an earlier change removed or replaced the parent
            continue
    data = json.dumps(body).encode()
    before = service.files_stored()
    status, answer = service.call("POST", "/jobs", data, {"Content-Type": "application/json"})
    event(str(status))
    if status == 200:  # the changes left a valid job: it is stored whole and reads back
        status, job = service.call("GET", f"/jobs/{answer['job_id']}")
        assert status == 200 and len(job["files"]) == len(body["files"]), job
        assert service.files_stored() == before + len(body["files"])
    else:
        assert_clear_refusal(status, answer, limit=1000)
        assert service.files_stored() == before  # nothing half-stored


WRONG = [
    None,
    True,
    0,
    -1,
    1.5,
    float("nan"),
    float("inf"),
    2**63,
    -(2**63) - 1,
    10**100,
    "",
    "x" * 5000,
    "\udcff",
    "root://b//\ud800",
    "nourl",
    "ADLER32:xyz",
    "root://a//f",
    [],
    [None],
    [[]],
    ["root://a//f"] * 3,
    {},
    {"a": [1]},
]


def test_every_field_with_every_wrong_value(service):
    """Systematic, beside the random mix above: each field of FIELDS set to each of WRONG (529 cases)."""
    for path in FIELDS:
        for value in WRONG:
            before = service.files_stored()
            status, answer = service.submit(put(valid_submission(), path, value, delete=False))
            if status == 200:
                assert service.call("GET", f"/jobs/{answer['job_id']}")[0] == 200
            else:
                assert_clear_refusal(status, answer, limit=1000)
                assert service.files_stored() == before, (path, value)


# -- bodies that are not JSON, or not what they claim -------------------------------------------------------------

VALID_TEXT = json.dumps(valid_submission())
CONTENT_TYPES = [
    "application/json",
    "text/plain",
    "application/x-www-form-urlencoded",
    "multipart/form-data; boundary=x",
    "",
    "application/json; charset=latin-1",
    "application/json; charset=utf-16",
    "application/json; charset=nope",
    "application/*",
    "../..",
    "é",
]


def nested(depth: int, open_: str, close: str) -> bytes:
    return ('{"files": ' + open_ * depth + close * depth + "}").encode()


RAW_BODIES = st.one_of(
    st.binary(max_size=2000),
    st.text(max_size=300).map(str.encode),
    JSON_VALUES.map(lambda v: json.dumps(v, default=str).encode()),
    st.integers(0, len(VALID_TEXT)).map(lambda n: VALID_TEXT[:n].encode()),  # cut short
    st.tuples(
        st.integers(0, len(VALID_TEXT)), st.sampled_from([b"\xff", b"\xc3", b"\x00", b"\xed\xa0\x80", b"\\"])
    ).map(lambda t: VALID_TEXT.encode()[: t[0]] + t[1] + VALID_TEXT.encode()[t[0] :]),
    st.builds(
        nested,
        st.sampled_from([30, 33, 500, 990, 5000, 100_000]),
        st.sampled_from(["[", '{"a":']),
        st.sampled_from(["]", "}"]),
    ),
    st.sampled_from(
        [
            b'{"files": NaN}',
            b'{"files": [' + b"9" * 5000 + b"]}",
            b'{"files": [1e999]}',
            b'{"files": "\\ud800"}',
            b'{"files": [], "files": [{}]}',
            VALID_TEXT.encode("utf-16"),
            VALID_TEXT.encode("utf-32"),
            b"\xef\xbb\xbf" + VALID_TEXT.encode(),
            b"null",
            b"[]",
            b'"files"',
            b"",
            b" " * 10_000,
        ]
    ),
)


@settings(max_examples=300, deadline=None, phases=PHASES, suppress_health_check=SHARED)
@given(body=RAW_BODIES, content_type=st.sampled_from(CONTENT_TYPES), target=st.sampled_from(["/jobs", "/jobs/x"]))
def test_raw_bodies(service, body, content_type, target):
    headers = {"Content-Type": content_type} if content_type else {}
    status, answer = service.call("POST", target, body, headers)
    event(str(status))
    if status != 200:
        assert_clear_refusal(status, answer, limit=1000)


# -- job ids: unknown, malformed, someone else's -------------------------------------------------------------------

ID_TEXT = st.one_of(
    st.text(max_size=40),
    st.sampled_from(["", ",", ",,,", " ", "%", "..", "/", "\x00", "\udcff", "é", "x" * 5000, "null", "*", "'; --"]),
)


@settings(max_examples=300, deadline=None, phases=PHASES, suppress_health_check=SHARED)
@given(
    method=st.sampled_from(["GET", "DELETE", "POST"]),
    parts=st.lists(st.one_of(ID_TEXT, st.sampled_from(["<mine>", "<theirs>"])), min_size=0, max_size=6),
    body=st.one_of(st.none(), JSON_VALUES.map(lambda v: json.dumps({"params": {"priority": v}}, default=str))),
)
def test_job_ids(service, method, parts, body):
    mine = service.submit(valid_submission(1))[1]["job_id"]
    theirs = service.submit(valid_submission(1), token=TOKENS["other"])[1]["job_id"]
    ids = [mine if p == "<mine>" else theirs if p == "<theirs>" else p for p in parts]
    path = "/jobs/" + ",".join(quote(i.encode("utf-8", "surrogatepass"), safe="") for i in ids)
    data = body.encode("utf-8", "surrogatepass") if body is not None else None
    status, answer = service.call(method, path, data, {"Content-Type": "application/json"})
    event(f"{method} {status}")
    assert status < 500, (status, answer)
    if status in (200, 207):
        assert isinstance(answer, dict | list)
    else:
        assert_clear_refusal(status, answer)
    if method == "DELETE" and status == 403:  # all or nothing: my job, if listed, was not cancelled either
        assert service.store.job(mine)["state"] == "SUBMITTED"


# -- paths, methods and credentials that do not exist --------------------------------------------------------------

# /jobs lists jobs as FTS3's does (cheroot reads "//jobs" as "/jobs")
KNOWN = {("GET", "/"), ("GET", "/whoami"), ("GET", "/metrics"), ("GET", "/jobs"), ("GET", "//jobs")}


@settings(max_examples=200, deadline=None, phases=PHASES, suppress_health_check=SHARED)
@given(
    method=st.sampled_from(["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS", "TRACE", "FOO", "PROPFIND"]),
    path=st.one_of(
        st.sampled_from(["/", "/whoami", "/metrics", "/jobs", "/jobs/", "/jobs/x/files", "//jobs", "/delegation"]),
        st.text(max_size=40).map(lambda t: "/" + quote(t.encode("utf-8", "surrogatepass"))),
    ),
    token=st.one_of(
        st.sampled_from([TOKENS["rucio"], "wrong", "", None]), st.text(alphabet="abcXYZ019 -=", max_size=20)
    ),
)
def test_unknown_paths_methods_and_credentials(service, method, path, token):
    status, answer = service.call(method, path, b"{}" if method in ("POST", "PUT", "PATCH") else None, token=token)
    event(str(status))
    assert status < 500, (method, path, status, answer)
    if status < 400:  # HEAD and OPTIONS answer no data (and cheroot reads "//x" as "/")
        assert method in ("HEAD", "OPTIONS") or (method, path) in KNOWN, (method, path, status)
        assert method in ("HEAD", "OPTIONS") or token == TOKENS["rucio"] or path == "/", (method, path, status)
    elif method != "HEAD":  # a HEAD answer has no body
        assert_clear_refusal(status, answer)


# -- fixed cases: sizes, protocol-level garbage, and the regressions the fuzz found ---------------------------------


def test_huge_bodies(service):
    files_before = service.files_stored()
    big = valid_submission(1)
    big["files"][0]["sources"] = ["x" * (20 << 20)]  # 20 MiB, and not a URL
    status, answer = service.submit(big)
    assert status == 400 and "not a URL" in answer["message"] and len(answer["message"]) < 1000
    big["files"][0]["sources"] = ["root://a//f"]
    big["params"]["job_metadata"] = {"note": "y" * (20 << 20)}  # 20 MiB, but valid: stored and read back
    status, answer = service.submit(big)
    assert status == 200, answer
    assert service.call("GET", f"/jobs/{answer['job_id']}")[0] == 200
    many = valid_submission(10_001)  # one more file than a job may have
    status, answer = service.submit(many)
    assert status == 400 and "files" in answer["message"]
    status, answer = service.call(
        "POST", "/jobs", b"{}", {"Content-Type": "application/json", "Content-Length": str(100 << 20)}
    )
    assert status == 413 and "larger than" in answer["message"]
    assert service.files_stored() == files_before + 1


@pytest.mark.parametrize(
    "request_bytes",
    [
        b"POST /jobs HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n{}",
        b"POST /jobs HTTP/1.1\r\nHost: x\r\nContent-Length: -5\r\n\r\n{}",
        b"GET /jobs/\xff\xfe HTTP/1.1\r\nHost: x\r\n\r\n",
        b"GET /whoami HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer \xff\xfe\r\n\r\n",
        b"POST /jobs HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n{}\r\n0\r\n\r\n",
        b"NOT HTTP AT ALL\r\n\r\n",
    ],
)
def test_protocol_garbage_is_refused(service, request_bytes):
    """Requests HTTP itself refuses (cheroot answers those, in plain text) or the application refuses (JSON)."""
    with socket.create_connection(("127.0.0.1", service.port), timeout=TIMEOUT) as sock:
        sock.sendall(request_bytes)
        sock.shutdown(socket.SHUT_WR)
        reply = b""
        while chunk := sock.recv(65536):
            reply += chunk
    status = int(reply.split(b" ", 2)[1])
    assert 400 <= status < 500, reply[:300]


def test_regressions_found_by_the_fuzz(service):
    """Each of these was a 500 (or, for the last, a half-done change) before."""
    before = service.files_stored()
    body = valid_submission(1)
    body["files"][0]["filesize"] = 2**63  # SQLite's INTEGER overflowed
    assert "filesize" in service.submit(body)[1]["message"]
    for field, value in (("activity", "\udcff"), ("destinations", ["root://b//\ud800"])):  # lone surrogates
        body = valid_submission(1)
        body["files"][0][field] = value
        status, answer = service.submit(body)
        assert status == 400 and "not Unicode" in answer["message"]
    status, answer = service.submit({"files": [], "params": {"job_metadata": nested_value(40)}})
    assert status == 400 and "nested deeper" in answer["message"]
    status, answer = service.call("POST", "/jobs", b"[" * 100_000, {"Content-Type": "application/json"})
    assert status == 400 and "nested deeper" in answer["message"]  # the decoder's RecursionError
    for method in ("GET", "DELETE"):
        status, answer = service.call(method, "/jobs/,,")
        assert status == 400 and "no job id" in answer["message"]  # was an empty 207
    mine = service.submit(valid_submission(1))[1]["job_id"]
    theirs = service.submit(valid_submission(1), token=TOKENS["other"])[1]["job_id"]
    assert service.call("DELETE", f"/jobs/{mine},{theirs}")[0] == 403
    assert service.store.job(mine)["state"] == "SUBMITTED"  # was cancelled before the refusal
    assert service.files_stored() == before + 2


def nested_value(depth: int) -> Any:
    value: Any = 1
    for _ in range(depth):
        value = [value]
    return value


def test_the_service_still_serves_after_the_fuzz(service):
    assert_healthy(service)
    body = valid_submission(1) | {"params": {"id_generator": "deterministic", "sid": "after-the-fuzz"}}
    assert service.submit(body)[0] == 200 and service.submit(body)[0] == 409
    status, metrics = service.call("GET", "/metrics")
    assert status == 200 and metrics["links"]
