"""The FTS3-compatible REST service: the part of FTS3's API that Rucio's conveyor calls, over the durable store and
the engine. A thin adapter: requests are authenticated, parsed (``fts3``), stored before they are acknowledged,
and answered in FTS3's words; the engine does the work.

Served by cheroot (a threaded WSGI server with TLS) because it hands the verified client certificate to the
application, as Apache's mod_ssl does for FTS3 itself.
"""

from __future__ import annotations

import logging
import re
import signal
import ssl
import threading
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from flask import Flask, g, jsonify, request
from pydantic import ValidationError

import datalake
from datalake.errors import TransferError
from datalake.transfer import auth, fts3
from datalake.transfer.config import ServiceSettings
from datalake.transfer.engine import Engine
from datalake.transfer.store import DuplicateJob, Store

log = logging.getLogger("datalake.transfer.service")
MAX_BODY = 64 << 20  # bytes: a 10,000-file job is ~10 MiB of JSON
MAX_DEPTH = 32  # levels of JSON nesting: Rucio's bodies have 4 or 5
_SURROGATE = re.compile("[\ud800-\udfff]")


class BadBody(Exception):
    """A request body refused with 400: ``str(err)`` says why."""


def json_body() -> Any:
    """The request's JSON (None if it is not JSON). Refused here, not half-way through storing a job: nesting
    deeper than MAX_DEPTH (the decoder, then storing and rendering the job, would recurse), and strings with lone
    surrogates (legal JSON escapes such as \\ud800, which SQLite cannot store as text)."""
    try:
        body = request.get_json(silent=True)
    except RecursionError:
        raise BadBody(f"the JSON body is nested deeper than {MAX_DEPTH} levels") from None
    stack = [(body, 1)]
    while stack:
        value, depth = stack.pop()
        if isinstance(value, str):
            if _SURROGATE.search(value):
                raise BadBody("the JSON body has text that is not Unicode (a lone surrogate such as \\ud800)")
            continue
        if not isinstance(value, dict | list):
            continue
        if depth > MAX_DEPTH:
            raise BadBody(f"the JSON body is nested deeper than {MAX_DEPTH} levels")
        items = [*value, *value.values()] if isinstance(value, dict) else value
        stack.extend((item, depth + 1) for item in items)
    return body


def create_app(store: Store, engine: Engine, settings: ServiceSettings) -> Flask:
    app = Flask("datalake.transfer")
    app.config["MAX_CONTENT_LENGTH"] = MAX_BODY
    auth_settings = settings.auth()
    base_id = store.base_id()
    answered: Counter[str] = Counter()  # responses since start by status class: the service's error count
    answered_lock = threading.Lock()

    def reply(body: Any, status: int):
        response = jsonify(body)
        response.status_code = status
        return response

    def refuse(status: int, message: str):
        phrase = {
            400: "Bad Request",
            401: "Unauthorized",
            403: "Forbidden",
            404: "Not Found",
            409: "Conflict",
            413: "Too Large",
            500: "Internal Server Error",
        }
        return reply(fts3.error(f"{status} {phrase.get(status, '')}".strip(), message), status)

    @app.before_request
    def _authenticate():
        if request.path == "/":  # the version, as FTS3 shows it to anyone (used as a health check)
            return None
        dn = request.environ.get("SSL_CLIENT_S_DN") if request.environ.get("SSL_CLIENT_VERIFY") == "SUCCESS" else None
        who = auth.identify(auth_settings, request.headers.get("Authorization"), dn, request.remote_addr)
        if isinstance(who, str):
            log.warning("refused %s %s from %s: %s", request.method, request.path, request.remote_addr, who)
            return refuse(401, who)
        g.identity = who
        return None

    @app.after_request
    def _count(response):
        with answered_lock:
            answered[f"{response.status_code // 100}xx"] += 1
        return response

    @app.errorhandler(413)
    def _too_large(_err):
        return refuse(413, f"request body larger than {MAX_BODY >> 20} MiB")

    @app.errorhandler(404)
    def _no_route(_err):
        return refuse(404, f"no such resource: {request.method} {request.path}")

    @app.errorhandler(500)
    def _internal(err):
        log.error("%s %s failed: %s", request.method, request.path, getattr(err, "original_exception", err))
        return refuse(500, "internal error (logged by the service)")

    @app.errorhandler(BadBody)
    def _bad_body(err: BadBody):
        return refuse(400, str(err))

    @app.errorhandler(405)
    def _no_method(_err):
        return refuse(400, f"{request.method} is not supported on {request.path}")

    @app.get("/")
    def version():
        return reply(
            {
                "api": fts3.API_VERSION,
                "schema": fts3.API_VERSION,
                "delegation": fts3.API_VERSION,
                "service": "datalake transfer service",
                "version": datalake.__version__,
            },
            200,
        )

    @app.get("/whoami")
    def whoami():
        who: auth.Identity = g.identity
        return reply(
            {
                "user_dn": who.dn or who.account,
                "dn": [who.dn or who.account],
                "vos": [who.account],
                "vos_id": [],
                "roles": [],
                "method": who.method,
                "base_id": base_id,
                "delegation_id": auth.digest(who.dn or who.account)[:16],
            },
            200,
        )

    @app.post("/jobs")
    def submit():
        body = json_body()
        if not isinstance(body, dict):
            return refuse(400, "the body must be a JSON object with 'files' and 'params'")
        try:
            submission = fts3.Submission.model_validate(body)
        except ValidationError as err:
            first = err.errors()[0]
            where = ".".join(str(p) for p in first["loc"])
            return refuse(400, f"{where}: {first['msg']}")
        who: auth.Identity = g.identity
        if settings.submitters and who.account not in settings.submitters:
            return refuse(403, f"{who.account} may not submit transfers here")
        job_id = None
        if submission.params.id_generator == "deterministic":
            if not submission.params.sid:
                return refuse(400, "params.sid is required with id_generator=deterministic")
            job_id = fts3.deterministic_id(base_id, who.account, submission.params.sid)
        try:
            job_id = store.submit(fts3.to_job(submission, settings.retries), who.account, job_id)
        except DuplicateJob:
            return refuse(409, f"a job with the id {job_id} exists already")
        engine.poke()
        log.info("job %s: %d files from %s", job_id, len(submission.files), who.account)
        return reply({"job_id": job_id}, 200)

    def answer(answers: list[dict[str, Any]]):
        """One job: itself (404 with the same shape when lost, which Rucio's poller reads as LOST); several: 207."""
        if len(answers) == 1:
            return reply(answers[0], 200 if answers[0]["http_status"] == "200 Ok" else 404)
        return reply(answers, 207)

    def may_change(job: dict[str, Any]) -> bool:
        who: auth.Identity = g.identity
        return who.account == job["job"]["account"] or who.account in settings.submitters

    @app.get("/jobs/<ids>")
    def status(ids: str):
        wanted = [i for i in ids.split(",") if i]
        if not wanted:
            return refuse(400, "no job id in the path")
        return answer([fts3.render_job(job) if (job := store.job(i)) else fts3.not_found(i) for i in wanted])

    @app.delete("/jobs/<ids>")
    def cancel(ids: str):
        wanted = [i for i in ids.split(",") if i]
        if not wanted:
            return refuse(400, "no job id in the path")
        jobs = [(job_id, store.job(job_id)) for job_id in wanted]
        for job_id, job in jobs:  # all or nothing: a refusal must not leave the others cancelled
            if job is not None and not may_change(job):
                return refuse(403, f"job {job_id} belongs to {job['job']['account']}")
        answers = []
        for job_id, job in jobs:
            if job is None:
                answers.append(fts3.not_found(job_id))
            else:
                store.cancel(job_id)
                answers.append(fts3.render_job(store.job(job_id)))
        return answer(answers)

    @app.post("/jobs/<job_id>")
    def modify(job_id: str):
        body = json_body()
        params = body.get("params") if isinstance(body, dict) else None
        priority = params.get("priority") if isinstance(params, dict) else None
        if not isinstance(priority, int) or isinstance(priority, bool):
            return refuse(400, 'expected {"params": {"priority": N}}')
        priority = fts3.clamp_priority(priority)
        job = store.job(job_id)
        if job is None:
            return refuse(404, f"No job with the id {job_id} has been found")
        if not may_change(job):
            return refuse(403, f"job {job_id} belongs to {job['job']['account']}")
        store.set_priority(job_id, priority)
        return reply({"job_id": job_id, "priority": priority, "http_message": "priority updated"}, 200)

    @app.get("/metrics")
    def metrics():
        with answered_lock:
            requests = {key: answered[key] for key in ("2xx", "4xx", "5xx")}
        return reply(
            {
                "links": engine.metrics(),
                "requests": requests,
                "settings": {"stream_below": settings.stream_below, "max_active": settings.max_active},
            },
            200,
        )

    return app


def tls_adapter(settings: ServiceSettings):
    """cheroot's TLS with client certificates optional (tokens work without one) but verified when sent."""
    from cheroot.ssl.builtin import BuiltinSSLAdapter

    tls = settings.tls
    assert tls is not None
    adapter = BuiltinSSLAdapter(str(tls.cert), str(tls.key))
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(str(tls.cert), str(tls.key))
    if tls.ca is not None:
        if tls.ca.is_dir():
            context.load_verify_locations(capath=str(tls.ca))
        else:
            context.load_verify_locations(cafile=str(tls.ca))
        context.verify_mode = ssl.CERT_OPTIONAL
    adapter.context = context
    return adapter


def serve(settings: ServiceSettings, ready: threading.Event | None = None) -> None:
    """Run until SIGTERM/SIGINT: take the database (one service per database), bind the port, open the store
    (in-flight files from a killed run come back to be re-checked), start the engine, answer requests; on the way
    out stop taking requests, then let copies in flight end."""
    from cheroot import wsgi

    settings.database.parent.mkdir(parents=True, exist_ok=True)
    with exclusive_database(settings.database):
        store = Store(settings.database)
        engine = Engine(store, settings.engine())
        server = wsgi.Server(
            (settings.host, settings.port),
            create_app(store, engine, settings),
            numthreads=settings.threads,
            server_name="datalake-transfer",
        )
        if settings.tls:
            server.ssl_adapter = tls_adapter(settings)
        try:
            server.prepare()  # binds the port: fails here, before the engine touches any transfer
        except OSError as err:
            raise TransferError(f"cannot listen on {settings.host}:{settings.port}: {err.strerror or err}") from None

        def stop(*_: Any) -> None:
            threading.Thread(target=server.stop, daemon=True).start()

        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, stop)
            signal.signal(signal.SIGINT, stop)
        engine.start()
        log.info("serving FTS3 API on %s (database %s)", settings.url, settings.database)
        if ready is not None:
            ready.set()
        try:
            server.serve()
        finally:
            engine.stop()


@contextmanager
def exclusive_database(path: Path) -> Iterator[None]:
    """Two services on one database would each take the other's transfers in flight for crashed ones."""
    import fcntl

    with open(path.with_name(path.name + ".lock"), "w") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise TransferError(f"another transfer service is using {path}") from None
        yield
