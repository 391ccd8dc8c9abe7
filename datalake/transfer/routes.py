"""The transfer service's HTTP routes: one function per route of FTS3's REST API, and what every route shares
(FTS3's error shape, the checks on a request body, who is calling, the hooks and error pages). Each function takes
what it uses (the store, the engine, the settings) as arguments; ``service.create_app`` binds them in its route
table, so a route's handler is read here without knowing how the app is put together.
"""

from __future__ import annotations

import logging
import platform
import re
import threading
from collections import Counter
from typing import Any

from flask import Response, g, jsonify, request
from pydantic import ValidationError
from werkzeug.exceptions import HTTPException

import datalake
from datalake.transfer import auth, fts3
from datalake.transfer.config import ServiceSettings
from datalake.transfer.engine import Engine
from datalake.transfer.model import ACTIVE, SUBMITTED
from datalake.transfer.store import DuplicateJob, Store

log = logging.getLogger("datalake.transfer.service")  # the service's name in its log, whichever module logs
MAX_BODY = 64 << 20  # bytes: a 10,000-file job is ~10 MiB of JSON
MAX_DEPTH = 32  # levels of JSON nesting: Rucio's bodies have 4 or 5
_SURROGATE = re.compile("[\ud800-\udfff]")
PHRASES = {
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    409: "Conflict",
    413: "Too Large",
    500: "Internal Server Error",
}


# -- requests and answers -----------------------------------------------------------------------------------------


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


def reply(body: Any, status: int) -> Response:
    response = jsonify(body)
    response.status_code = status
    return response


def refuse(status: int, message: str) -> Response:
    """FTS3's error body, with its status line (``400 Bad Request``) in it."""
    return reply(fts3.error(f"{status} {PHRASES.get(status, '')}".strip(), message), status)


def caller() -> auth.Identity:
    """Who sent this request: ``authenticate`` has set it before any route runs."""
    return g.identity


def may_change(who: auth.Identity, job: dict[str, Any], settings: ServiceSettings) -> bool:
    """Its owner may cancel or reprioritise a job, and so may the submitters."""
    return who.account == job["job"]["account"] or who.account in settings.submitters


def job_ids(ids: str) -> list[str]:
    """The ids of ``/jobs/a,b,c``: FTS3 takes several at once, comma-separated."""
    return [i for i in ids.split(",") if i]


def answer(answers: list[dict[str, Any]]) -> Response:
    """One job: itself (404 with the same shape when lost, which Rucio's poller reads as LOST); several: 207."""
    if len(answers) == 1:
        return reply(answers[0], 200 if answers[0]["http_status"] == "200 Ok" else 404)
    return reply(answers, 207)


# -- every request ------------------------------------------------------------------------------------------------


def authenticate(auth_settings: auth.AuthSettings) -> Response | None:
    """Before any route: 401 unless the caller is known (a token, or a client certificate TLS verified)."""
    if request.path == "/":  # the version, as FTS3 shows it to anyone (used as a health check)
        return None
    dn = request.environ.get("SSL_CLIENT_S_DN") if request.environ.get("SSL_CLIENT_VERIFY") == "SUCCESS" else None
    who = auth.identify(auth_settings, request.headers.get("Authorization"), dn, request.remote_addr)
    if isinstance(who, str):
        log.warning("refused %s %s from %s: %s", request.method, request.path, request.remote_addr, who)
        return refuse(401, who)
    g.identity = who
    return None


class Answered:
    """Responses since start by status class: the service's error count, which ``/metrics`` shows."""

    def __init__(self) -> None:
        self._counts: Counter[str] = Counter()
        self._lock = threading.Lock()

    def count(self, response: Response) -> Response:
        """After every request, refusals and crashes included."""
        with self._lock:
            self._counts[f"{response.status_code // 100}xx"] += 1
        return response

    def classes(self) -> dict[str, int]:
        with self._lock:
            return {key: self._counts[key] for key in ("2xx", "4xx", "5xx")}


def too_large(_err: HTTPException) -> Response:
    return refuse(413, f"request body larger than {MAX_BODY >> 20} MiB")


def no_route(_err: HTTPException) -> Response:
    return refuse(404, f"no such resource: {request.method} {request.path}")


def internal(err: HTTPException) -> Response:
    log.error("%s %s failed: %s", request.method, request.path, getattr(err, "original_exception", err))
    return refuse(500, "internal error (logged by the service)")


def bad_body(err: BadBody) -> Response:
    return refuse(400, str(err))


def no_method(_err: HTTPException) -> Response:
    """A method the route does not take: 400 with FTS3's error body, not Flask's 405 page."""
    return refuse(400, f"{request.method} is not supported on {request.path}")


# -- the routes ---------------------------------------------------------------------------------------------------


def version() -> Response:
    """``GET /``: the API level we answer as, public (a health check)."""
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


def whoami(base_id: str) -> Response:
    """``GET /whoami``: ``base_id`` and ``vos`` are what Rucio computes deterministic job ids from."""
    who = caller()
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


def submit(store: Store, engine: Engine, settings: ServiceSettings, base_id: str) -> Response:
    """``POST /jobs``: the job is on disk before its id is returned; a deterministic id seen before is 409."""
    body = json_body()
    if not isinstance(body, dict):
        return refuse(400, "the body must be a JSON object with 'files' and 'params'")
    try:
        submission = fts3.Submission.model_validate(body)
    except ValidationError as err:
        first = err.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        return refuse(400, f"{where}: {first['msg']}")
    who = caller()
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


def status(store: Store, ids: str) -> Response:
    """``GET /jobs/<ids>``: anyone authenticated may look at any job."""
    wanted = job_ids(ids)
    if not wanted:
        return refuse(400, "no job id in the path")
    return answer([fts3.render_job(job) if (job := store.job(i)) else fts3.not_found(i) for i in wanted])


UNFINISHED = (SUBMITTED, ACTIVE)  # what `fts-rest-transfer-list` shows unless asked for other states


def listing(store: Store) -> Response:
    """``GET /jobs``: the newest jobs, as ``fts-rest-transfer-list`` asks: ``user_dn``/``vo_name`` (the account
    here), ``state_in`` (default: the unfinished ones), ``limit`` (default 100)."""
    wanted = [request.args.get(k) for k in ("user_dn", "vo_name") if request.args.get(k)]
    states = {s for s in request.args.get("state_in", ",".join(UNFINISHED)).split(",") if s}
    try:
        limit = max(1, min(int(request.args.get("limit", "100")), 1000))
    except ValueError:
        return refuse(400, "limit must be a whole number")
    jobs = (store.job(job_id) for job_id in store.recent(wanted, limit * 10))
    shown = [fts3.render_job(job) for job in jobs if job is not None and job["state"] in states]
    return reply(shown[:limit], 200)


def job_files(store: Store, job_id: str) -> Response:
    """``GET /jobs/<id>/files``: the job's files (``fts-rest-transfer-status -j``)."""
    job = store.job(job_id)
    return reply(fts3.render_job(job)["files"], 200) if job else refuse(404, fts3.not_found(job_id)["http_message"])


def job_data_management(store: Store, job_id: str) -> Response:
    """``GET /jobs/<id>/dm``: deletions and stagings of the job, of which this service runs none."""
    return reply([], 200) if store.job(job_id) else refuse(404, fts3.not_found(job_id)["http_message"])


def hosts(engine: Engine) -> Response:
    """``GET /status/hosts``: this service's active transfers, as FTS3 answers per host."""
    active = sum(int(link.get("active", 0)) for link in engine.metrics().values())
    return reply({platform.node() or "localhost": {"active": active, "staging": 0}}, 200)


def cancel(store: Store, settings: ServiceSettings, ids: str) -> Response:
    """``DELETE /jobs/<ids>``: all or nothing, so a refusal must not leave the others cancelled."""
    wanted = job_ids(ids)
    if not wanted:
        return refuse(400, "no job id in the path")
    jobs = [(job_id, store.job(job_id)) for job_id in wanted]
    for job_id, job in jobs:
        if job is not None and not may_change(caller(), job, settings):
            return refuse(403, f"job {job_id} belongs to {job['job']['account']}")
    answers = []
    for job_id, job in jobs:
        if job is None:
            answers.append(fts3.not_found(job_id))
        else:
            store.cancel(job_id)
            answers.append(fts3.render_job(store.job(job_id)))
    return answer(answers)


def cancel_files(store: Store, settings: ServiceSettings, job_id: str, file_ids: str) -> Response:
    """``DELETE /jobs/<id>/files/<file ids>`` (``fts-rest-transfer-cancel JOB:1,2``): what has not started is
    cancelled; the answer is each file's state, one string for one file, as FTS3 answers."""
    try:
        wanted = [int(i) for i in file_ids.split(",") if i.strip()]
    except ValueError:
        return refuse(400, "file ids are whole numbers separated by commas")
    job = store.job(job_id)
    if job is None:
        return refuse(404, fts3.not_found(job_id)["http_message"])
    if not may_change(caller(), job, settings):
        return refuse(403, f"job {job_id} belongs to {job['job']['account']}")
    states = store.cancel_files(job_id, wanted)
    missing = [i for i in wanted if i not in states]
    if missing:
        return refuse(404, f"job {job_id} has no file {missing[0]}")
    answers = [states[i] for i in wanted]
    return reply(answers[0] if len(answers) == 1 else answers, 200)


def modify(store: Store, settings: ServiceSettings, job_id: str) -> Response:
    """``POST /jobs/<job_id>``: a new priority, clamped to FTS3's 1..5 as FTS3 does."""
    body = json_body()
    params = body.get("params") if isinstance(body, dict) else None
    priority = params.get("priority") if isinstance(params, dict) else None
    if not isinstance(priority, int) or isinstance(priority, bool):
        return refuse(400, 'expected {"params": {"priority": N}}')
    priority = fts3.clamp_priority(priority)
    job = store.job(job_id)
    if job is None:
        return refuse(404, f"No job with the id {job_id} has been found")
    if not may_change(caller(), job, settings):
        return refuse(403, f"job {job_id} belongs to {job['job']['account']}")
    store.set_priority(job_id, priority)
    return reply({"job_id": job_id, "priority": priority, "http_message": "priority updated"}, 200)


def metrics(engine: Engine, settings: ServiceSettings, answered: Answered) -> Response:
    """``GET /metrics``: per link, then the answers by status class (this one is counted after it answers)."""
    requests = answered.classes()
    return reply(
        {
            "links": engine.metrics(),
            "requests": requests,
            "settings": {"stream_below": settings.stream_below, "max_active": settings.max_active},
        },
        200,
    )
