"""Rucio writes that lost a database deadlock (to Rucio's own daemons) are retried; nothing else is."""

from __future__ import annotations

import pytest
from rucio.common.exception import DatabaseException, DataIdentifierNotFound

from datalake.catalog import transient_retry


def flaky(failures: list[Exception]):
    calls = []

    def call(*args, **kwargs):
        calls.append((args, kwargs))
        if failures:
            raise failures.pop(0)
        return "rule-id"

    return call, calls


def test_a_database_exception_is_retried_until_it_succeeds():
    call, calls = flaky([DatabaseException("deadlock detected"), DatabaseException("deadlock detected")])
    assert transient_retry(call)("x", copies=1) == "rule-id"
    assert calls == [(("x",), {"copies": 1})] * 3


def test_other_errors_are_not_retried():
    call, calls = flaky([DataIdentifierNotFound("no such did")])
    with pytest.raises(DataIdentifierNotFound):
        transient_retry(call)()
    assert len(calls) == 1


def test_a_lasting_database_failure_is_raised_after_a_few_attempts():
    call, calls = flaky([DatabaseException("down")] * 10)
    with pytest.raises(DatabaseException):
        transient_retry(call)()
    assert len(calls) == 5
