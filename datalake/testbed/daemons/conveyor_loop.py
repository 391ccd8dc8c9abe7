"""Rucio's own conveyor and judge daemons, run in a loop with short waits (the testbed's ``conveyor`` component).

Runs in the Rucio *server* venv (``RUCIO_CONFIG`` = the server's config). The daemons are Rucio's, unchanged:
each cycle calls their run-once entry points, as Rucio's own test-suite does, so a rule added with the stock
``rucio`` CLI is fulfilled within seconds instead of the production daemons' minutes. The judge re-evaluator
picks up files attached to datasets that already have rules; the injector creates asynchronous rules.
"""

from __future__ import annotations

import argparse
import functools
import logging
import signal
import sys
import time
from pathlib import Path

stopping = False
SUBMITTING_TIMEOUT = 30  # seconds


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--heartbeat", type=Path, required=True, help="touched after every full cycle")
    parser.add_argument("--wait", type=float, default=0.5, help="seconds between cycles")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s", stream=sys.stdout)

    import datetime

    from rucio.daemons.common import run_daemon
    from rucio.daemons.conveyor import finisher, poller, submitter
    from rucio.daemons.judge import evaluator, injector

    # A submitter killed between marking requests SUBMITTING and handing them over leaves them so; the finisher
    # requeues them after this delay (Rucio's 120 min, in step with production cycles; this loop's cycle is
    # 0.5 s). Found by the fault-injection suite: a rule waited two hours after a conveyor SIGKILL.
    finisher.FAILED_DURING_SUBMISSION_DELAY = datetime.timedelta(seconds=SUBMITTING_TIMEOUT)

    def stop(*_: object) -> None:
        global stopping
        stopping = True

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)

    def evaluate() -> None:
        run_daemon(
            once=True,
            graceful_stop=evaluator.graceful_stop,
            executable=evaluator.DAEMON_NAME,
            partition_wait_time=0,
            sleep_time=30,
            run_once_fnc=functools.partial(evaluator.run_once, did_limit=1000, paused_dids={}),
        )

    def inject() -> None:
        run_daemon(
            once=True,
            graceful_stop=injector.graceful_stop,
            executable=injector.DAEMON_NAME,
            partition_wait_time=0,
            sleep_time=30,
            run_once_fnc=functools.partial(injector.run_once, paused_rules={}),
        )

    steps = [
        ("judge-injector", inject),
        ("judge-evaluator", evaluate),
        (
            "submitter",
            lambda: submitter.submitter(
                once=True,
                partition_wait_time=0,
                bulk=1000,
                group_bulk=200,
                transfertools=["fts3"],
                filter_transfertool=None,
            ),
        ),
        ("poller", lambda: poller.poller(once=True, partition_wait_time=0, older_than=0, db_bulk=1000, fts_bulk=100)),
        ("finisher", lambda: finisher.finisher(once=True, partition_wait_time=0, db_bulk=1000, bulk=1000)),
    ]
    cycle = 0
    while not stopping:
        for name, step in steps:
            try:
                step()
            except Exception:  # one daemon's bad cycle must not stop the others: Rucio retries next cycle
                logging.exception("%s cycle failed", name)
        cycle += 1
        args.heartbeat.write_text(f"{cycle} {time.time()}\n")
        time.sleep(args.wait)
    return 0


if __name__ == "__main__":
    sys.exit(main())
