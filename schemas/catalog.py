"""The schema catalog: every published version of the event schema, found by fingerprint.

Each ``avro/agent_event.vN.avsc`` is a version that was published and stays forever;
the highest N is the one writers use now and readers read into.
"""

from __future__ import annotations

import functools
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fastavro.schema import fingerprint, parse_schema, to_parsing_canonical_form

from agentlog.schemas.errors import SchemaError, UnknownFingerprint

AVRO_DIR = Path(__file__).parent / "avro"
_VERSION = re.compile(r"agent_event\.v(\d+)\.avsc$")


@dataclass(frozen=True)
class SchemaVersion:
    version: int
    path: Path
    schema: Any
    """The parsed schema, as fastavro uses it."""
    fingerprint: bytes
    """CRC-64-AVRO of the parsing canonical form, in the byte order single-object encoding uses."""
    decoding: Any
    """The same schema, parsed to read UUIDs as the strings they are on the wire (events carry them as
    text; turning each into a ``uuid.UUID`` and back costs a fifth of a decode)."""


class Catalog:
    def __init__(self, directory: Path = AVRO_DIR) -> None:
        versions = [load(path) for path in sorted(directory.glob("agent_event.v*.avsc"))]
        if not versions:
            raise SchemaError(f"no agent_event.vN.avsc schemas in {directory}")
        self.versions = {v.version: v for v in versions}
        self.current = self.versions[max(self.versions)]
        self._by_fingerprint = {v.fingerprint: v for v in versions}

    def by_fingerprint(self, value: bytes) -> SchemaVersion:
        try:
            return self._by_fingerprint[value]
        except KeyError:
            raise UnknownFingerprint(f"no schema in the catalog has fingerprint {value.hex()}") from None


def load(path: Path) -> SchemaVersion:
    match = _VERSION.search(path.name)
    if match is None:
        raise SchemaError(f"{path.name}: schema files are named agent_event.vN.avsc")
    try:
        text = json.loads(path.read_text())
        schema = parse_schema(text)
        decoding = parse_schema(_without_uuid(text))
    except (ValueError, TypeError, KeyError) as exc:  # fastavro raises SchemaParseException(ValueError) and others
        raise SchemaError(f"{path}: not a valid Avro schema: {exc}") from exc
    canonical = to_parsing_canonical_form(schema)
    return SchemaVersion(int(match.group(1)), path, schema, bytes.fromhex(fingerprint(canonical, "CRC-64-AVRO")),
                         decoding)


def _without_uuid(node: Any) -> Any:
    """The schema with ``"logicalType": "uuid"`` dropped (the wire form, a string, is unchanged)."""
    if isinstance(node, dict):
        return {k: _without_uuid(v) for k, v in node.items() if not (k == "logicalType" and v == "uuid")}
    if isinstance(node, list):
        return [_without_uuid(v) for v in node]
    return node


@functools.cache
def catalog() -> Catalog:
    """The catalog shipped with agentlog."""
    return Catalog()
