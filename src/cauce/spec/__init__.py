"""Typed, validated specs. Parsing does no I/O beyond reading the file it is given."""

from cauce.spec._duration import parse_duration
from cauce.spec._parse import job_spec, load_job, parse_job
from cauce.spec._sections import parse_memory
from cauce.spec._spark import spark_conf_pairs, with_spark_conf
from cauce.spec._tracking import parse_tracking
from cauce.spec._tune import (
    Objective,
    ParamSpec,
    PrunerSpec,
    SamplerSpec,
    TuneSpec,
    check_trials,
)
from cauce.spec._tune_parse import parse_tune
from cauce.spec._types import (
    JobSpec,
    Resources,
    RestartPolicy,
    RoleSpec,
    TensorBoardSpec,
    TrackingSpec,
)
from cauce.spec._values import CLUSTER_PREFIXES, MAX_CPUS, cluster_problem, number_problem

__all__ = [
    "CLUSTER_PREFIXES",
    "MAX_CPUS",
    "JobSpec",
    "Objective",
    "ParamSpec",
    "PrunerSpec",
    "Resources",
    "RestartPolicy",
    "RoleSpec",
    "SamplerSpec",
    "TensorBoardSpec",
    "TrackingSpec",
    "TuneSpec",
    "check_trials",
    "cluster_problem",
    "job_spec",
    "load_job",
    "number_problem",
    "parse_duration",
    "parse_job",
    "parse_memory",
    "parse_tracking",
    "parse_tune",
    "spark_conf_pairs",
    "with_spark_conf",
]
