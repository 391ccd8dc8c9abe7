"""The FTS3 dialect and the REST service without servers: what Rucio's FTS3 transfertool sends is stored and
answered in FTS3's words, and nobody unauthenticated gets in (Flask's test client; the engine is not started)."""

from __future__ import annotations

import copy
import datetime

import pytest

from datalake.errors import ConfigError
from datalake.transfer import auth, config, fts3
from datalake.transfer.engine import Engine
from datalake.transfer.service import create_app
from datalake.transfer.store import Store

TOKEN = "s3cret-token"


def rucio_submission(n: int = 2, **params) -> dict:
    """Shaped like Rucio 41's FTS3 transfertool's POST /jobs body."""
    files = [
        {
            "sources": [f"root://a:1094//rucio/f{i}", f"root://c:1094//rucio/f{i}"],
            "destinations": [f"root://b:1094//rucio/f{i}"],
            "metadata": {
                "request_id": f"req{i}",
                "scope": "s",
                "name": f"f{i}",
                "src_rse": "XRD1",
                "dst_rse": "XRD2",
                "filesize": 10,
                "adler32": "0a0b0c0d",
                "md5": None,
            },
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
            "job_metadata": {"issuer": "rucio", "multi_sources": True},
            "overwrite": False,
            "priority": 3,
            "max_time_in_queue": None,
            **params,
        },
    }


@pytest.fixture
def service(tmp_path):
    settings = config.ServiceSettings(
        database=tmp_path / "t.db",
        tokens={"conveyor": auth.digest(TOKEN)},
        certificates={"/C=CH/O=Lab/CN=rucio conveyor": "rucio"},
    )
    store = Store(settings.database)
    app = create_app(store, Engine(store, settings.engine()), settings)
    return app.test_client(), store


def bearer(token: str = TOKEN) -> dict:
    return {"Authorization": f"Bearer {token}"}


def test_submit_then_status_as_rucio_parses_it(service):
    client, store = service
    reply = client.post("/jobs", json=rucio_submission(), headers=bearer())
    assert reply.status_code == 200
    job_id = reply.get_json()["job_id"]
    assert "," not in job_id and len(job_id) <= 64
    reply = client.get(
        f"/jobs/{job_id}?files=file_state,dest_surl,finish_time,start_time,staging_start,"
        "staging_finished,reason,source_surl,file_metadata",
        headers=bearer(),
    )
    assert reply.status_code == 200
    job = reply.get_json()
    assert job["http_status"] == "200 Ok" and job["job_state"] == "SUBMITTED" and job["job_type"] == "N"
    assert job["job_metadata"] == {"issuer": "rucio", "multi_sources": True}
    first = job["files"][0]
    assert first["file_metadata"]["request_id"] == "req0"  # echoed unchanged: Rucio finds its request with it
    assert first["source_surl"] == "root://a:1094//rucio/f0" and first["dest_surl"] == "root://b:1094//rucio/f0"
    assert first["file_state"] == "SUBMITTED" and first["start_time"] is None

    (row,) = [r for r in store.claim(lambda _link: 10, 1)]
    store.finish(row.file_id, "FINISHED", "", "root://c:1094//rucio/f0", 10)
    files = client.get(f"/jobs/{job_id}", headers=bearer()).get_json()["files"]
    done = next(f for f in files if f["file_state"] == "FINISHED")
    assert done["source_surl"] == "root://c:1094//rucio/f0"  # the source really used
    for key in ("start_time", "finish_time"):  # the format Rucio's poller strptime-s
        datetime.datetime.strptime(done[key], "%Y-%m-%dT%H:%M:%S")


def test_multi_id_query_is_207_with_lost_jobs_marked(service):
    client, _ = service
    job_id = client.post("/jobs", json=rucio_submission(1), headers=bearer()).get_json()["job_id"]
    reply = client.get(f"/jobs/{job_id},nosuchjob", headers=bearer())
    assert reply.status_code == 207
    states = {j["job_id"]: j["http_status"] for j in reply.get_json()}
    assert states == {job_id: "200 Ok", "nosuchjob": "404 Not Found"}
    assert client.get("/jobs/nosuchjob", headers=bearer()).status_code == 404


def test_unauthenticated_and_wrong_credentials_refused(service):
    client, store = service
    for headers in ({}, bearer("wrong"), {"Authorization": "Basic abc"}):
        reply = client.post("/jobs", json=rucio_submission(), headers=headers)
        assert reply.status_code == 401, headers
        assert reply.get_json()["message"]
    assert store.counts() == {}
    assert client.get("/").status_code == 200  # the version stays public (a health check)
    assert client.get("/whoami").status_code == 401


def test_certificate_identity(service):
    client, _ = service
    environ = {"SSL_CLIENT_VERIFY": "SUCCESS", "SSL_CLIENT_S_DN": "C=CH,O=Lab,CN=rucio conveyor"}
    reply = client.get("/whoami", environ_base=environ)
    assert reply.status_code == 200 and reply.get_json()["vos"] == ["rucio"]
    other = {"SSL_CLIENT_VERIFY": "SUCCESS", "SSL_CLIENT_S_DN": "C=CH,O=Lab,CN=somebody"}
    assert client.get("/whoami", environ_base=other).status_code == 401
    unverified = {"SSL_CLIENT_VERIFY": "NONE", "SSL_CLIENT_S_DN": "C=CH,O=Lab,CN=rucio conveyor"}
    assert client.get("/whoami", environ_base=unverified).status_code == 401


def test_anonymous_only_when_configured_and_from_loopback():
    open_ = auth.AuthSettings({}, {}, allow_anonymous=True)
    assert isinstance(auth.identify(open_, None, None, "127.0.0.1"), auth.Identity)
    assert isinstance(auth.identify(open_, None, None, "10.0.0.5"), str)
    assert isinstance(auth.identify(auth.AuthSettings({}, {}), None, None, "127.0.0.1"), str)
    with pytest.raises(ValueError):
        config.ServiceSettings(host="0.0.0.0", allow_anonymous=True)


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        ({"files": []}, "files"),
        ({"files": [{"sources": [], "destinations": ["root://b//f"]}]}, "sources"),
        ({"files": [{"sources": ["root://a//f"], "destinations": ["root://b//f", "root://c//f"]}]}, "destinations"),
        ({"files": [{"sources": ["root://a//f"], "destinations": ["root://b//f"], "checksum": "CRC:1"}]}, "checksum"),
        ({"files": [{"sources": ["nourl"], "destinations": ["root://b//f"]}]}, "sources"),
        ({**rucio_submission(1), "params": {"multihop": True}}, "multihop"),
        ({**rucio_submission(1), "params": {"bring_online": 3600}}, "bring_online"),
        ({**rucio_submission(1), "params": {"verify_checksum": "sometimes"}}, "verify_checksum"),
    ],
)
def test_bad_submissions_are_400_and_store_nothing(service, body, fragment):
    client, store = service
    reply = client.post("/jobs", json=body, headers=bearer())
    assert reply.status_code == 400
    assert fragment in reply.get_json()["message"]
    assert store.counts() == {}


def test_not_json_is_400(service):
    client, _ = service
    reply = client.post("/jobs", data="{not json", headers={**bearer(), "Content-Type": "application/json"})
    assert reply.status_code == 400


def test_deterministic_ids_refuse_a_second_submission(service):
    client, store = service
    body = rucio_submission(1, id_generator="deterministic", sid="req0")
    first = client.post("/jobs", json=body, headers=bearer())
    assert first.status_code == 200
    who = client.get("/whoami", headers=bearer()).get_json()
    assert first.get_json()["job_id"] == fts3.deterministic_id(who["base_id"], who["vos"][0], "req0")  # Rucio's formula
    assert client.post("/jobs", json=body, headers=bearer()).status_code == 409
    assert sum(store.counts()["XRD1->XRD2"].values()) == 1


def test_cancel_and_priority(service):
    client, store = service
    job_id = client.post("/jobs", json=rucio_submission(2), headers=bearer()).get_json()["job_id"]
    reply = client.post(f"/jobs/{job_id}", json={"params": {"priority": 5}}, headers=bearer())
    assert reply.status_code == 200 and store.job(job_id)["job"]["priority"] == 5
    reply = client.post(f"/jobs/{job_id}", json={"params": {"priority": 0}}, headers=bearer())  # clamped, as FTS3
    assert reply.status_code == 200 and store.job(job_id)["job"]["priority"] == 1
    assert client.post(f"/jobs/{job_id}", json={"params": 5}, headers=bearer()).status_code == 400
    assert client.post("/jobs/nosuchjob", json={"params": {"priority": 2}}, headers=bearer()).status_code == 404
    reply = client.delete(f"/jobs/{job_id}", headers=bearer())
    assert reply.status_code == 200 and reply.get_json()["job_state"] == "CANCELED"
    assert {f["file_state"] for f in reply.get_json()["files"]} == {"CANCELED"}


def test_verify_checksum_booleans_and_default_retry():
    body = rucio_submission(1)
    body["params"]["verify_checksum"] = True
    job = fts3.to_job(fts3.Submission.model_validate(body), default_retry=4)
    assert job.verify_checksum == "both" and job.retry == 4
    body["params"].update(verify_checksum=False, retry=2)
    job = fts3.to_job(fts3.Submission.model_validate(body), default_retry=4)
    assert job.verify_checksum == "none" and job.retry == 3  # FTS3's retry counts retries after the first try


def test_config_file_then_environment_then_flags(tmp_path, monkeypatch):
    path = tmp_path / "svc.yaml"
    path.write_text("port: 9000\nstream_below: 1000\ndatabase: jobs.db\n")
    monkeypatch.setenv("DATALAKE_TRANSFER_STREAM_BELOW", "2000")
    settings = config.load(path, port=9100)
    assert (settings.port, settings.stream_below) == (9100, 2000)
    assert settings.database == (tmp_path / "jobs.db").resolve()
    path.write_text("port: [1\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        config.load(path)
    path.write_text("prot: 1\n")
    with pytest.raises(ConfigError, match="prot"):
        config.load(path)
    with pytest.raises(ConfigError, match="cannot read"):
        config.load(tmp_path / "missing.yaml")


def test_dn_spellings_compare_equal():
    assert auth.normalize_dn("/C=CH/O=Lab/CN=x") == auth.normalize_dn("C=CH, O=Lab, CN=x")


def test_a_single_lost_job_is_404_in_the_shape_rucio_reads(service):
    client, _ = service
    reply = client.get("/jobs/nosuchjob", headers=bearer())
    assert reply.status_code == 404
    body = reply.get_json()
    assert (body["job_id"], body["http_status"]) == ("nosuchjob", "404 Not Found")  # Rucio marks it LOST


def test_only_submitters_submit_and_only_owners_change_jobs(tmp_path):
    settings = config.ServiceSettings(
        database=tmp_path / "t.db",
        submitters=["rucio"],
        tokens={"rucio": auth.digest("r"), "analyst": auth.digest("a")},
    )
    store = Store(settings.database)
    client = create_app(store, Engine(store, settings.engine()), settings).test_client()
    assert client.post("/jobs", json=rucio_submission(), headers=bearer("a")).status_code == 403
    job_id = client.post("/jobs", json=rucio_submission(), headers=bearer("r")).get_json()["job_id"]
    assert client.get(f"/jobs/{job_id}", headers=bearer("a")).status_code == 200  # looking is fine
    assert client.delete(f"/jobs/{job_id}", headers=bearer("a")).status_code == 403
    assert client.post(f"/jobs/{job_id}", json={"params": {"priority": 5}}, headers=bearer("a")).status_code == 403
    assert store.job(job_id)["state"] == "SUBMITTED"


def test_a_certificate_is_refused_unless_listed(tmp_path):
    settings = config.ServiceSettings(database=tmp_path / "t.db")  # no certificates configured
    store = Store(settings.database)
    client = create_app(store, Engine(store, settings.engine()), settings).test_client()
    environ = {"SSL_CLIENT_VERIFY": "SUCCESS", "SSL_CLIENT_S_DN": "C=CH,O=Lab,CN=anybody"}
    assert client.get("/whoami", environ_base=environ).status_code == 401


def test_rucio_priorities_are_clamped_as_fts3_does(service):
    client, store = service
    job_id = client.post("/jobs", json=rucio_submission(1, priority=9), headers=bearer()).get_json()["job_id"]
    assert store.job(job_id)["job"]["priority"] == 5


def test_token_digests_must_be_digests():
    with pytest.raises(ValueError, match="SHA-256"):
        config.ServiceSettings(tokens={"rucio": "plain-token"})


def test_metrics_count_answers_by_status_class_including_500s(tmp_path):
    """The service's error count (a load test reads it): every answer counted once by class, a crash as 5xx."""
    settings = config.ServiceSettings(database=tmp_path / "t.db", tokens={"conveyor": auth.digest(TOKEN)})
    store = Store(settings.database)
    app = create_app(store, Engine(store, settings.engine()), settings)
    client = app.test_client()
    assert client.post("/jobs", json=rucio_submission(1), headers=bearer()).status_code == 200
    assert client.get("/jobs/nosuchjob", headers=bearer()).status_code == 404
    assert client.get("/whoami", headers=bearer("wrong")).status_code == 401

    def broken(*_args):
        raise RuntimeError("disk gone")

    store.job = broken  # the next status query crashes inside the handler
    assert client.get("/jobs/x", headers=bearer()).status_code == 500
    answered = client.get("/metrics", headers=bearer()).get_json()["requests"]
    assert answered == {"2xx": 1, "4xx": 2, "5xx": 1}  # the /metrics call itself is counted after it answers


FTS3_CLIENT_BODY = {  # what `fts-rest-transfer-submit -K SRC DST ADLER32` sends (fts3 3.14.2), nulls and all
    "params": {
        "overwrite": False,
        "verify_checksum": "b",
        "retry": 0,
        "priority": None,
        "job_metadata": None,
        "bring_online": -1,
        "multihop": False,
        "reuse": None,
        "spacetoken": None,
    },
    "files": [
        {
            "sources": ["root://a:1094//rucio/f"],
            "destinations": ["root://b:1094//rucio/f"],
            "source_tokens": ["T"],
            "destination_tokens": ["T"],
            "checksum": "ADLER32",
            "filesize": None,
            "activity": None,
            "scitag": None,
            "metadata": None,
        }
    ],
}


def test_what_fts3s_own_cli_submits_is_taken_with_its_defaults(service):
    client, store = service
    reply = client.post("/jobs", json=FTS3_CLIENT_BODY, headers=bearer())
    assert reply.status_code == 200, reply.get_json()
    job = store.job(reply.get_json()["job_id"])
    assert job["job"]["verify_checksum"] == "both" and job["job"]["priority"] == 3
    assert job["files"][0].spec.checksum is None and job["files"][0].spec.activity == "default"
    for letter, mode in (("n", "none"), ("s", "source"), ("t", "target")):
        body = {**FTS3_CLIENT_BODY, "params": {**FTS3_CLIENT_BODY["params"], "verify_checksum": letter}}
        job_id = client.post("/jobs", json=body, headers=bearer()).get_json()["job_id"]
        assert store.job(job_id)["job"]["verify_checksum"] == mode


def test_the_routes_fts3s_cli_reads_list_files_dm_and_hosts(service):
    client, store = service
    first = client.post("/jobs", json=rucio_submission(2), headers=bearer()).get_json()["job_id"]
    second = client.post("/jobs", json=rucio_submission(1), headers=bearer()).get_json()["job_id"]
    for row in store.claim(lambda _link: 10, 10):
        if row.job_id == second:
            store.finish(row.file_id, "FINISHED", "", None, 1)
    listed = client.get("/jobs", headers=bearer()).get_json()
    assert [j["job_id"] for j in listed] == [first]  # unfinished ones unless asked
    asked = client.get("/jobs?state_in=FINISHED&vo_name=conveyor", headers=bearer()).get_json()
    assert [j["job_id"] for j in asked] == [second]
    assert client.get("/jobs?vo_name=nobody", headers=bearer()).get_json() == []
    assert client.get("/jobs?limit=x", headers=bearer()).status_code == 400
    files = client.get(f"/jobs/{first}/files", headers=bearer()).get_json()
    assert len(files) == 2 and {f["file_state"] for f in files} <= {"SUBMITTED", "ACTIVE"}
    assert client.get(f"/jobs/{first}/dm", headers=bearer()).get_json() == []
    assert client.get("/jobs/nosuchjob/files", headers=bearer()).status_code == 404
    hosts = client.get("/status/hosts", headers=bearer()).get_json()
    assert len(hosts) == 1 and set(next(iter(hosts.values()))) == {"active", "staging"}


def test_paths_with_the_double_slash_of_fts3s_client_reach_the_app():
    """fts-rest-* asks for ``//whoami``; cheroot alone answers 400 "Absolute URI not allowed"."""
    import http.client
    import threading

    from cheroot import wsgi

    from datalake.transfer.service import accept_double_slashes

    def app(environ, start_response):
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [f"{environ['PATH_INFO']}?{environ['QUERY_STRING']}".encode()]

    server = wsgi.Server(("127.0.0.1", 0), app, numthreads=1)
    accept_double_slashes(server)
    server.prepare()
    threading.Thread(target=server.serve, daemon=True).start()
    try:
        for path, seen in (("//whoami", "/whoami?"), ("///jobs?state_in=ACTIVE", "/jobs?state_in=ACTIVE"), ("/", "/?")):
            connection = http.client.HTTPConnection(*server.bind_addr, timeout=5)
            connection.request("GET", path)
            answer = connection.getresponse()
            assert (answer.status, answer.read().decode()) == (200, seen)
            connection.close()
    finally:
        server.stop()


def test_wlcg_tokens_of_the_configured_issuer_are_credentials_and_nothing_else_is():
    import time

    import jwt as pyjwt
    from cryptography.hazmat.primitives.asymmetric import rsa

    from datalake.transfer.oidc import TokenVerifier

    ours, theirs = (rsa.generate_private_key(public_exponent=65537, key_size=2048) for _ in range(2))
    verify = TokenVerifier(
        "https://iam.lake",
        ["https://wlcg.cern.ch/jwt/v1/any", "fts.lake"],
        {"robot": "rucio"},
        signing_key=lambda _token: ours.public_key(),
    )

    def token(key=ours, **claims) -> str:
        now = int(time.time())
        base = {"iss": "https://iam.lake", "sub": "robot", "aud": ["fts.lake"], "iat": now, "exp": now + 600}
        return pyjwt.encode({**base, **claims}, key, algorithm="RS256")

    settings = auth.AuthSettings({}, {}, verify_jwt=verify)
    assert auth.identify(settings, f"Bearer {token()}", None, None) == auth.Identity("rucio", "token", "robot")
    refusals = {
        "expired": token(exp=int(time.time()) - 5),
        "not meant for this service": token(aud=["rucio"]),
        "another issuer": token(iss="https://elsewhere"),
        "cannot be verified": token(key=theirs),
        "no account for the token's subject 'stranger'": token(sub="stranger"),
    }
    for reason, value in refusals.items():
        refused = auth.identify(settings, f"Bearer {value}", None, None)
        assert isinstance(refused, str) and reason in refused and value not in refused
    assert auth.identify(settings, "Bearer opaque-token", None, None) == "unknown or revoked token"


def test_the_services_own_storage_token_is_configured_beside_its_file(tmp_path):
    path = tmp_path / "svc.yaml"
    secret = tmp_path / "lake-secret"
    secret.write_text("s3cret")
    secret.chmod(0o600)
    path.write_text(
        "storage_token:\n  issuer: https://iam.lake\n  client_id: lake\n  secret_file: lake-secret\n  file: token\n"
    )
    settings = config.load(path)
    token_file = settings.storage_token_file()
    assert token_file is not None and token_file.path == (tmp_path / "token").resolve()
    assert token_file.client is not None and (token_file.client.client_id, token_file.client.secret) == (
        "lake",
        "s3cret",
    )
    assert "s3cret" not in repr(settings)
    secret.chmod(0o644)
    with pytest.raises(ConfigError, match="open to others"):
        config.load(path)


def test_single_files_of_a_job_are_cancelled_as_fts3s_cli_asks(service):
    client, store = service
    job_id = client.post("/jobs", json=rucio_submission(3), headers=bearer()).get_json()["job_id"]
    first, second, third = (f.file_id for f in store.job(job_id)["files"])
    (started,) = store.claim(lambda _link: 1, 1)  # one file is in flight: it is not cancelled under the engine
    assert started.file_id == first
    answer = client.delete(f"/jobs/{job_id}/files/{first},{second}", headers=bearer())
    assert answer.status_code == 200 and answer.get_json() == ["ACTIVE", "CANCELED"]
    assert client.delete(f"/jobs/{job_id}/files/{third}", headers=bearer()).get_json() == "CANCELED"
    assert client.delete(f"/jobs/{job_id}/files/x", headers=bearer()).status_code == 400
    assert client.delete(f"/jobs/{job_id}/files/999999", headers=bearer()).status_code == 404
    assert client.delete(f"/jobs/nosuchjob/files/{first}", headers=bearer()).status_code == 404


def test_the_per_file_tokens_rucio_sends_are_kept_per_url_and_never_shown(service):
    """Rucio's FTS3 transfertool with ``oidc_support``: a token per source and one for the destination."""
    client, store = service
    body = copy.deepcopy(FTS3_CLIENT_BODY)
    body["files"][0].update(
        sources=["davs://a:1094/rucio/f", "davs://c:1094/rucio/f"],
        destinations=["davs://b:1094/rucio/f"],
        source_tokens=["src-a", None],  # Rucio puts None where it could not get one
        destination_tokens=["dst-b"],
    )
    reply = client.post("/jobs", json=body, headers=bearer())
    assert reply.status_code == 200, reply.get_json()
    job_id = reply.get_json()["job_id"]
    assert store.job(job_id)["files"][0].spec.tokens == {
        "davs://a:1094/rucio/f": "src-a",
        "davs://b:1094/rucio/f": "dst-b",
    }
    shown = client.get(f"/jobs/{job_id}/files", headers=bearer()).get_data(as_text=True)
    shown += client.get(f"/jobs/{job_id}", headers=bearer()).get_data(as_text=True)
    assert "src-a" not in shown and "dst-b" not in shown
    body["files"][0]["source_tokens"] = ["only-one"]  # two sources
    refused = client.post("/jobs", json=body, headers=bearer())
    assert refused.status_code == 400 and "source_tokens has 1 entries for 2 sources" in refused.get_json()["message"]
