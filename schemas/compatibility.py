"""Can a reader schema read what a writer schema wrote? Avro's resolution rules, checked structurally.

A new version must read every older one (backward compatibility); the tests run
``check_catalog`` so a breaking change to a schema file fails CI.
"""

from __future__ import annotations

from typing import Any

from agentlog.schemas.catalog import Catalog
from agentlog.schemas.errors import IncompatibleSchema

_PROMOTIONS = {
    "int": {"int", "long", "float", "double"},
    "long": {"long", "float", "double"},
    "float": {"float", "double"},
    "string": {"string", "bytes"},
    "bytes": {"bytes", "string"},
}


def problems(writer: Any, reader: Any, path: str = "") -> list[str]:
    """Every reason the reader cannot read the writer's data; empty when it can."""
    if isinstance(writer, list) or isinstance(reader, list):
        return _union(writer, reader, path)
    w_type, r_type = _type(writer), _type(reader)
    if w_type in _PROMOTIONS or w_type in {"null", "boolean", "double"}:
        ok = r_type in _PROMOTIONS.get(w_type, {w_type})
        return [] if ok else [f"{path or 'root'}: {w_type} cannot be read as {r_type}"]
    if w_type != r_type:
        return [f"{path or 'root'}: {w_type} cannot be read as {r_type}"]
    if w_type == "record":
        return _record(writer, reader, path)
    if w_type == "array":
        return problems(writer["items"], reader["items"], f"{path}[]")
    if w_type == "map":
        return problems(writer["values"], reader["values"], f"{path}{{}}")
    if w_type == "enum":
        missing = set(writer["symbols"]) - set(reader["symbols"])
        if missing and "default" not in reader:
            return [f"{path}: enum symbols {sorted(missing)} unknown to the reader, which has no default"]
        return []
    if w_type == "fixed" and writer["size"] != reader["size"]:
        return [f"{path}: fixed size {writer['size']} read as {reader['size']}"]
    return []


def _type(schema: Any) -> str:
    return schema if isinstance(schema, str) else schema["type"]


def _names(schema: Any) -> set[str]:
    if not isinstance(schema, dict) or "name" not in schema:
        return set()
    return {schema["name"], *schema.get("aliases", [])}


def _record(writer: dict[str, Any], reader: dict[str, Any], path: str) -> list[str]:
    if not _names(writer) & _names(reader) and writer["name"].split(".")[-1] != reader["name"].split(".")[-1]:
        return [f"{path}: record {writer['name']} read as {reader['name']}"]
    found: list[str] = []
    written = {f["name"]: f for f in writer["fields"]}
    for field in reader["fields"]:
        here = f"{path}.{field['name']}" if path else field["name"]
        source = next((written[n] for n in [field["name"], *field.get("aliases", [])] if n in written), None)
        if source is None:
            if "default" not in field:
                found.append(f"{here}: new field without a default")
            continue
        found += problems(source["type"], field["type"], here)
    return found


def _union(writer: Any, reader: Any, path: str) -> list[str]:
    branches = writer if isinstance(writer, list) else [writer]
    choices = reader if isinstance(reader, list) else [reader]
    found: list[str] = []
    for branch in branches:
        label = branch.get("name", _type(branch)) if isinstance(branch, dict) else branch
        candidates = [c for c in choices if _type(c) == _type(branch)
                      and (not _names(branch) or _names(branch) & _names(c))]
        if not candidates:
            found.append(f"{path}: union branch {label} has no match in the reader")
        elif all(problems(branch, c, f"{path}<{label}>") for c in candidates):
            found += problems(branch, candidates[0], f"{path}<{label}>")
    return found


def check_catalog(catalog: Catalog) -> None:
    """Raise IncompatibleSchema unless every version reads every older one."""
    versions = sorted(catalog.versions.values(), key=lambda v: v.version)
    for i, reader in enumerate(versions):
        for writer in versions[:i]:
            found = problems(writer.schema, reader.schema)
            if found:
                raise IncompatibleSchema(f"{reader.path.name} cannot read {writer.path.name}: {'; '.join(found)}")
