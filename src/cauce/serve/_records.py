"""What ``POST /v2/models/{name}/predict`` expects: the raw record's fields, with their types.

``GET /v2/models/{name}/predict`` answers :func:`raw_schema`::

    {"name": "flights", "version": "1", "unknown_fields": "ignored",
     "fields": [{"name": "carrier", "kind": "categorical", "type": "string",
                 "nullable": true, "required": true, "categories": 16}, ...,
                {"name": "distance", "kind": "numeric", "type": "number",
                 "nullable": true, "required": true, "fill": 1040.0}, ...]}

Every field is required (a record that lacks some gets one 400 naming all of them) and may be
null: a null category is coded as unknown (0), a null number becomes its ``fill``. A field
that is not a feature is ignored, and the answer names it in the ``Cauce-Ignored-Fields``
header. ``type`` is ``string`` or ``integer`` (the type of the vocabulary's values; a category
sent as the other is looked up too) or ``number``.
"""

from __future__ import annotations

from typing import Any

from cauce.serve._spec import ModelSpec
from cauce.serve.api import Preprocessing

__all__ = ["IGNORED_HEADER", "ignored_header", "raw_fields", "raw_schema"]

#: The response header that names the fields of the records that were ignored.
IGNORED_HEADER = b"cauce-ignored-fields"


def ignored_header(names: set[str], limit: int = 20) -> tuple[bytes, bytes]:
    """The header naming ignored fields: printable ASCII names only (a name that is not is
    counted), at most ``limit`` of them, then how many more."""
    shown = sorted(n for n in names if n.isascii() and n.isprintable() and "," not in n)
    rest = len(names) - min(len(shown), limit)
    value = ", ".join(shown[:limit]) + (f", and {rest} more" if rest else "")
    return IGNORED_HEADER, value.lstrip(", ").encode("ascii")


def raw_fields(pre: Preprocessing) -> list[dict[str, Any]]:
    """One entry per feature, in the order of the model's inputs."""
    fields: list[dict[str, Any]] = []
    for cat in pre.categorical:
        kind = "string" if all(isinstance(v, str) for v in cat.vocabulary) else "integer"
        if kind == "integer" and not all(isinstance(v, int) for v in cat.vocabulary):
            kind = "string or integer"
        fields.append(
            {
                "name": cat.name,
                "kind": "categorical",
                "type": kind,
                "nullable": True,
                "required": True,
                "categories": len(cat.vocabulary),
            }
        )
    for num in pre.numeric:
        fields.append(
            {
                "name": num.name,
                "kind": "numeric",
                "type": "number",
                "nullable": True,
                "required": True,
                "fill": num.fill_value,
            }
        )
    return fields


def raw_schema(spec: ModelSpec) -> dict[str, Any]:
    """The body of ``GET /v2/models/{name}/predict``; ``fields`` is empty for a model saved
    without preprocessing (whose ``/predict`` answers 404)."""
    pre = spec.preprocessing
    return {
        "name": spec.name,
        "version": spec.version,
        "fields": raw_fields(pre) if pre is not None else [],
        "unknown_fields": "ignored",
    }
