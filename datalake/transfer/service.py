"""The FTS3-compatible REST service: the part of FTS3's API that Rucio's conveyor calls, over the durable store and
the engine. A thin adapter: requests are authenticated, parsed (``fts3``), stored before they are acknowledged,
and answered in FTS3's words; the engine does the work. Each route's handler is in ``routes``; ``create_app`` holds
the table of routes and what each handler is given.

Served by cheroot (a threaded WSGI server with TLS) because it hands the verified client certificate to the
application, as Apache's mod_ssl does for FTS3 itself.
"""

from __future__ import annotations

import logging
import signal
import ssl
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import partial
from pathlib import Path
from typing import Any

from flask import Flask, Response

from datalake.errors import TransferError
from datalake.transfer import routes
from datalake.transfer.config import ServiceSettings
from datalake.transfer.engine import Engine
from datalake.transfer.store import Store

log = logging.getLogger("datalake.transfer.service")


def create_app(store: Store, engine: Engine, settings: ServiceSettings) -> Flask:
    """The WSGI app: each route's handler (in ``routes``) bound to what it uses, and the hooks every request
    passes through (authentication first, then the count of answers ``/metrics`` shows)."""
    app = Flask("datalake.transfer")
    app.config["MAX_CONTENT_LENGTH"] = routes.MAX_BODY
    base_id = store.base_id()
    answered = routes.Answered()

    app.before_request(partial(routes.authenticate, settings.auth()))
    app.after_request(answered.count)
    errors: list[tuple[int | type[Exception], Callable[[Any], Response]]] = [
        (413, routes.too_large),
        (404, routes.no_route),
        (500, routes.internal),
        (routes.BadBody, routes.bad_body),
        (405, routes.no_method),
    ]
    for error, page in errors:
        app.register_error_handler(error, page)

    table: list[tuple[str, str, Callable[..., Response]]] = [  # method, route, handler with its dependencies
        ("GET", "/", routes.version),
        ("GET", "/whoami", partial(routes.whoami, base_id=base_id)),
        ("POST", "/jobs", partial(routes.submit, store=store, engine=engine, settings=settings, base_id=base_id)),
        ("GET", "/jobs", partial(routes.listing, store=store)),
        ("GET", "/jobs/<ids>", partial(routes.status, store=store)),
        ("GET", "/jobs/<job_id>/files", partial(routes.job_files, store=store)),
        ("GET", "/jobs/<job_id>/dm", partial(routes.job_data_management, store=store)),
        ("GET", "/status/hosts", partial(routes.hosts, engine=engine)),
        ("DELETE", "/jobs/<ids>", partial(routes.cancel, store=store, settings=settings)),
        ("DELETE", "/jobs/<job_id>/files/<file_ids>", partial(routes.cancel_files, store=store, settings=settings)),
        ("POST", "/jobs/<job_id>", partial(routes.modify, store=store, settings=settings)),
        ("GET", "/metrics", partial(routes.metrics, engine=engine, settings=settings, answered=answered)),
    ]
    for method, rule, handler in table:
        endpoint = getattr(handler, "func", handler).__name__  # the handler's name, as @app.get would call it
        app.add_url_rule(rule, endpoint, handler, methods=[method])
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


def accept_double_slashes(server: Any) -> None:
    """FTS3's own client (``fts-rest-*``) joins its endpoint and paths with a slash too many (``GET //whoami``),
    which FTS3's server takes but cheroot refuses as an absolute URI before the app sees it: collapse the leading
    slashes of the request line's path."""
    from cheroot import server as cheroot_server

    class Request(cheroot_server.HTTPRequest):
        def read_request_line(self) -> Any:
            readline = self.rfile.readline

            def first_line(*args: Any, **kwargs: Any) -> bytes:
                line = readline(*args, **kwargs)
                method, space, rest = line.partition(b" ")
                return method + b" /" + rest.lstrip(b"/") if space and rest.startswith(b"//") else line

            self.rfile.readline = first_line
            try:
                return super().read_request_line()
            finally:
                del self.rfile.readline

    class Connection(cheroot_server.HTTPConnection):
        RequestHandlerClass = Request

    server.ConnectionClass = Connection


def serve(settings: ServiceSettings, ready: threading.Event | None = None) -> None:
    """Run until SIGTERM/SIGINT: take the database (one service per database), bind the port, open the store
    (in-flight files from a killed run come back to be re-checked), start the engine, answer requests; on the way
    out stop taking requests, then let copies in flight end."""
    from cheroot import wsgi

    from datalake.storage.xrootd import apply_client_settings

    apply_client_settings()  # before any copy loads the XRootD client (ours, or gfal2's plugin)
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
        accept_double_slashes(server)
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
