"""OTLP/HTTP trace requests, read as the OpenTelemetry protocol says: protobuf or JSON, gzip or not.

Everything in a body is hostile: its size is bounded before and after gzip, ids must be the sizes the
protocol says and not all zero, times must be sound. A span that breaks a rule is rejected alone (the
response's partial success says how many and why); a body that is not OTLP at all is a BadRequest.
"""

from __future__ import annotations

import base64
import json
import math
import time
import zlib
from dataclasses import dataclass
from typing import Any, Iterable

from google.protobuf import json_format
from google.protobuf.message import DecodeError
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTracePartialSuccess,
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Status

from agentlog.producers.otel import Span, SpanEvent
from agentlog.producers.otel.genai import SUBJECT, subject_of

PROTOBUF = "application/x-protobuf"
JSON = "application/json"
MAX_INFLATED = 32 << 20
"""Bytes of a body once gunzipped: a small gzip bomb stops here."""
MAX_SPANS = 10_000
MAX_DEPTH = 16
"""Nesting of attribute values (arrays, key-value lists)."""
MAX_TEXT = 192 << 10
"""UTF-8 bytes of one attribute value kept whole; a longer one is cut here, with a marker saying how much went
(a prompt of 10 MB would otherwise make an event larger than the broker takes)."""
FUTURE_NS = 5 * 60 * 10**9
"""How far past now a span may end (clock skew), as for every event."""


class BadRequest(ValueError):
    """The body is not an OTLP trace request: one line says what is wrong."""


class TooLarge(ValueError):
    """The body is larger than the ingest takes."""


@dataclass
class Decoded:
    spans: list[Span]
    rejected: int = 0
    problems: list[str] | None = None

    def reject(self, problem: str) -> None:
        self.rejected += 1
        if self.problems is None:
            self.problems = []
        if len(self.problems) < 3 and problem not in self.problems:
            self.problems.append(problem)


def media_type(content_type: str | None) -> str:
    kind = (content_type or "").split(";")[0].strip().lower()
    if kind in (PROTOBUF, JSON):
        return kind
    raise BadRequest(f"Content-Type {content_type or '(none)'!r} is not OTLP: send {PROTOBUF} or {JSON}")


def inflate(body: bytes, encoding: str | None) -> bytes:
    """The body without its Content-Encoding (gzip, or none); TooLarge past MAX_INFLATED."""
    kind = (encoding or "identity").strip().lower()
    if kind in ("identity", ""):
        return body
    if kind not in ("gzip", "x-gzip"):
        raise BadRequest(f"Content-Encoding {encoding!r} is not supported: send gzip or none")
    inflater = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
    try:
        data = inflater.decompress(body, MAX_INFLATED + 1)
    except zlib.error as exc:
        raise BadRequest(f"the body is not valid gzip ({exc})") from None
    if len(data) > MAX_INFLATED:
        raise TooLarge(f"the body inflates past {MAX_INFLATED >> 20} MiB; send smaller batches")
    if not inflater.eof:
        raise BadRequest("the gzip body is cut short")
    return data


def parse(body: bytes, kind: str) -> ExportTraceServiceRequest:
    request = ExportTraceServiceRequest()
    if kind == PROTOBUF:
        try:
            request.ParseFromString(body)
        except (DecodeError, RecursionError, ValueError) as exc:
            raise BadRequest(f"the body is not an OTLP ExportTraceServiceRequest in protobuf ({exc})") from None
        return request
    try:
        data = json.loads(body)
    except (ValueError, RecursionError) as exc:
        raise BadRequest(f"the body is not JSON ({str(exc)[:120]})") from None
    if not isinstance(data, dict):
        raise BadRequest("the body is JSON but not an object: send {\"resourceSpans\": [...]}")
    try:
        json_format.ParseDict(_hex_ids_to_base64(data), request, ignore_unknown_fields=True)
    except (json_format.ParseError, RecursionError, ValueError, TypeError) as exc:
        raise BadRequest(f"the body is not an OTLP trace request in JSON ({str(exc)[:160]})") from None
    return request


_ID_FIELDS = frozenset({"traceId", "spanId", "parentSpanId", "trace_id", "span_id", "parent_span_id"})


def _hex_ids_to_base64(node: Any, depth: int = 0) -> Any:
    """OTLP/JSON writes ids in hex, where protobuf's JSON mapping expects base64: turned here."""
    if depth > 64:
        raise BadRequest("the JSON body nests too deep")
    if isinstance(node, dict):
        out = {}
        for key, value in node.items():
            if key in _ID_FIELDS and isinstance(value, str):
                try:
                    out[key] = base64.b64encode(bytes.fromhex(value)).decode()
                except ValueError:
                    raise BadRequest(f"{key} {value[:40]!r} is not hex") from None
            else:
                out[key] = _hex_ids_to_base64(value, depth + 1)
        return out
    if isinstance(node, list):
        return [_hex_ids_to_base64(item, depth + 1) for item in node]
    return node


def clean(text: str) -> str:
    """Text every store takes: no NUL, no lone surrogate (JSON can carry both)."""
    if "\x00" in text:
        text = text.replace("\x00", "")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        text = text.encode("utf-8", "replace").decode("utf-8")
    return text


def cut(text: str, limit: int = MAX_TEXT) -> str:
    """``text`` whole when its UTF-8 is at most ``limit`` bytes; else its first ``limit`` bytes and a marker."""
    if len(text) <= limit // 4:
        return text
    data = text.encode("utf-8")
    if len(data) <= limit:
        return text
    kept = data[:limit].decode("utf-8", "ignore")
    return f"{kept}… [cut by agentlog: {len(data) - len(kept.encode()):,} of {len(data):,} bytes]"


def value_of(value: AnyValue, depth: int = 0) -> Any:
    which = value.WhichOneof("value")
    if which is None:
        return None
    if which == "string_value":
        return cut(clean(value.string_value))
    if which == "double_value":
        number = value.double_value
        return number if math.isfinite(number) else str(number)
    if which == "array_value":
        return [value_of(v, depth + 1) for v in value.array_value.values] if depth < MAX_DEPTH else "[...]"
    if which == "kvlist_value":
        if depth >= MAX_DEPTH:
            return "{...}"
        return {clean(kv.key): value_of(kv.value, depth + 1) for kv in value.kvlist_value.values}
    if which == "bytes_value":
        return cut(base64.b64encode(value.bytes_value).decode())
    return getattr(value, which)


def _attributes(items: Any) -> dict[str, Any]:
    return {clean(kv.key): value_of(kv.value) for kv in items if kv.key}


def spans_of(request: ExportTraceServiceRequest, *, now_ns: int | None = None,
             subjects: Iterable[str] = SUBJECT) -> Decoded:
    """The request's spans, each checked alone; each span's subject from the first of ``subjects`` among its
    attributes, else its resource's (the attribute moves to ``Span.subject``: it is not kept as one)."""
    now_ns = now_ns or time.time_ns()
    names = tuple(subjects)
    decoded = Decoded([])
    for resource_spans in request.resource_spans:
        resource = _attributes(resource_spans.resource.attributes)
        service = str(resource.get("service.name") or "")
        for scope_spans in resource_spans.scope_spans:
            for span in scope_spans.spans:
                if len(decoded.spans) >= MAX_SPANS:
                    decoded.reject(f"more than {MAX_SPANS} spans in one request")
                    continue
                problem = _problem(span, now_ns)
                if problem is not None:
                    decoded.reject(problem)
                    continue
                error = span.status.message if span.status.code == Status.STATUS_CODE_ERROR else None
                attributes = _attributes(span.attributes)
                subject = subject_of(attributes, resource, names=names)
                for name in names:
                    attributes.pop(name, None)
                decoded.spans.append(Span(
                    trace_id=span.trace_id.hex(), span_id=span.span_id.hex(), name=clean(span.name[:1024]),
                    start_ns=span.start_time_unix_nano, end_ns=span.end_time_unix_nano,
                    attributes=attributes, parent_span_id=span.parent_span_id.hex(),
                    events=tuple(SpanEvent(clean(e.name), e.time_unix_nano, _attributes(e.attributes))
                                 for e in span.events[:128]),
                    error=clean(error) if error is not None else None, service=clean(service[:256]),
                    subject=subject and clean(subject)))
    return decoded


def _problem(span: Any, now_ns: int) -> str | None:
    if len(span.trace_id) != 16 or not any(span.trace_id):
        return "a span has no usable trace id (16 bytes, not all zero)"
    if len(span.span_id) != 8 or not any(span.span_id):
        return "a span has no usable span id (8 bytes, not all zero)"
    if span.parent_span_id and len(span.parent_span_id) != 8:
        return "a span's parent span id is not 8 bytes"
    if not span.start_time_unix_nano or span.end_time_unix_nano < span.start_time_unix_nano:
        return "a span's times are missing or end before they start"
    if span.end_time_unix_nano > now_ns + FUTURE_NS:
        return "a span ends more than 5 minutes in the future (check the sender's clock)"
    return None


def response(kind: str, rejected: int = 0, message: str = "") -> bytes:
    """The ExportTraceServiceResponse, in the request's encoding, with its partial success when some span
    was rejected."""
    answer = ExportTraceServiceResponse()
    if rejected:
        answer.partial_success.CopyFrom(ExportTracePartialSuccess(rejected_spans=rejected, error_message=message))
    if kind == PROTOBUF:
        return bytes(answer.SerializeToString())
    return json.dumps(json_format.MessageToDict(answer)).encode()
