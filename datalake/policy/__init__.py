"""Sharing policies as code: the schema, loading with line numbers, metadata, release and evaluation."""

from datalake.policy.evaluate import DesiredOpenData, DesiredRule, DesiredState, evaluate
from datalake.policy.loader import Problem, check, find, load, parse
from datalake.policy.model import SharingPolicy, Tier

__all__ = [
    "DesiredOpenData",
    "DesiredRule",
    "DesiredState",
    "Problem",
    "SharingPolicy",
    "Tier",
    "check",
    "evaluate",
    "find",
    "load",
    "parse",
]
