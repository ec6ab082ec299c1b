"""The ``tracking:`` section of job, tune and pipeline files (MLflow).

``tracking: {uri: http://mlflow:5000, experiment: flights, model: flights}``, every key
optional; ``tracking: false`` turns tracking off (also when ``$MLFLOW_TRACKING_URI`` is set).
"""

from __future__ import annotations

from collections.abc import Mapping

from cauce.spec._types import TrackingSpec
from cauce.spec._values import FieldParser, kind_of, short_repr

__all__ = ["parse_tracking"]

_KEYS = ("uri", "experiment", "model")


def parse_tracking(value: object, source: str = "") -> TrackingSpec:
    """Validate a ``tracking:`` value (a mapping, null for "on, from the environment", or
    false for off)."""
    p = FieldParser(source)
    if value is False:
        return TrackingSpec(enabled=False)
    if value is None or value is True:
        return TrackingSpec()
    if not isinstance(value, Mapping):
        raise p.error(
            "tracking",
            f"must be a mapping like {{uri: http://127.0.0.1:5000, experiment: NAME}} or false, "
            f"got {kind_of(value)}",
            value,
        )
    p.check_keys(value, _KEYS, "tracking")
    found: dict[str, str | None] = {}
    for key in _KEYS:
        item = value.get(key)
        if item is not None and (not isinstance(item, str) or not item.strip()):
            raise p.error(
                f"tracking.{key}", f"must be a non-empty string, got {short_repr(item)}", item
            )
        found[key] = item
    return TrackingSpec(uri=found["uri"], experiment=found["experiment"], model=found["model"])
