"""Typed, validated specs. Parsing does no I/O beyond reading the file it is given."""

from cauce.spec._parse import load_job, parse_job, parse_memory
from cauce.spec._types import JobSpec, Resources, RestartPolicy, RoleSpec, TensorBoardSpec

__all__ = [
    "JobSpec",
    "Resources",
    "RestartPolicy",
    "RoleSpec",
    "TensorBoardSpec",
    "load_job",
    "parse_job",
    "parse_memory",
]
