"""A conversation's subject from every way in, without a service: the recorder, the GenAI mapping that the
OTLP ingest and the adapters share, the OTLP decoding and the setting that names the attributes. That
``forget --subject`` then erases what came in each way is shown against the real services in
``tests/consumers/operations/test_forget_every_way.py``."""

from __future__ import annotations

import time

import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue

from agentlog.deploy.settings import Settings
from agentlog.producers.errors import SubjectConflict
from agentlog.producers.ingest.otlp import spans_of
from agentlog.producers.otel import Span, State, Timeline, points
from agentlog.producers.otel.genai import subject_of_run
from agentlog.producers.recorder import Conversation
from agentlog.schemas import Codec, EventType
from agentlog.schemas.errors import ConfigError
from agentlog.schemas.rules import InvalidEvent


def _conversation(**kwargs) -> Conversation:
    return Conversation(None, agent="triage", conversation_id="conv-subjects", **kwargs)  # type: ignore[arg-type]


def test_the_recorder_puts_its_subject_on_every_event_and_refuses_a_second() -> None:
    conv = _conversation(subject_id="user-7")
    events = [conv.build(EventType.CONVERSATION_STARTED, {"user_message": "hi", "channel": None}),
              conv.build(EventType.RESPONSE_GENERATED, {"response": "hello"})]
    assert [e.subject_id for e in events] == ["user-7", "user-7"]
    conv.identify("user-7")  # the same subject again changes nothing
    with pytest.raises(SubjectConflict, match="user-7.*cannot name 'user-8'"):
        conv.identify("user-8")
    assert conv.subject_id == "user-7"


def test_a_subject_named_mid_conversation_applies_from_then_on() -> None:
    conv = _conversation()
    before = conv.build(EventType.CONVERSATION_STARTED, {"user_message": "hi", "channel": None})
    conv.identify("user-9")
    after = conv.build(EventType.RESPONSE_GENERATED, {"response": "hello"})
    assert (before.subject_id, after.subject_id) == (None, "user-9")
    assert Codec().decode(Codec().encode(after)).subject_id == "user-9"


@pytest.mark.parametrize("bad", ["", "   ", "x" * 257, "a\x00b", 7])
def test_a_subject_that_is_no_id_is_refused_in_one_line(bad) -> None:
    with pytest.raises(InvalidEvent, match="a subject id is 1 to 256 characters"):
        _conversation(subject_id=bad)


def _span(span_id: str, start: int, attributes: dict, subject: str | None = None) -> Span:
    return Span("cd" * 16, span_id, "span", start, start + 1_000, attributes, subject=subject)


def test_the_mapping_takes_the_first_subject_named_and_keeps_it() -> None:
    now = time.time_ns()
    chat = {"gen_ai.operation.name": "chat", "gen_ai.request.model": "gpt-4o", "gen_ai.input.messages":
            '[{"role": "user", "parts": [{"type": "text", "content": "hello"}]}]'}
    spans = [_span("01" * 8, now, chat), _span("02" * 8, now + 10_000, chat, subject="user-1"),
             _span("03" * 8, now + 20_000, chat, subject="user-2"), _span("04" * 8, now + 30_000, chat)]
    timeline = Timeline("conv-otel")
    made = [m.event for m in timeline.feed(p for s in spans for p in points(s))]
    assert [e.subject_id for e in made] == [None, None, "user-1", "user-1", "user-1"]  # started, then 4 calls
    assert State.from_json(timeline.state.to_json()).subject == "user-1"  # stored with the ingest's state, resumed
    resumed = Timeline("conv-otel", State.from_json(timeline.state.to_json()))
    later = [m.event for m in resumed.feed(points(_span("05" * 8, now + 40_000, chat, subject="user-3")))]
    assert [e.subject_id for e in later] == ["user-1"]
    given = [m.event for m in Timeline("conv-adapter", subject_id="user-4").feed(points(spans[0]))]
    assert {e.subject_id for e in given} == {"user-4"}


def test_a_runs_metadata_names_its_subject() -> None:
    assert subject_of_run({"user_id": "u-1", "other": 2}) == "u-1"
    assert subject_of_run({"subject_id": "s-1", "user_id": "u-1"}) == "s-1"
    assert subject_of_run({"user_id": ""}) is None and subject_of_run(None) is None and subject_of_run("u") is None


def _value(text: str) -> AnyValue:
    return AnyValue(string_value=text)


def _request(span_attributes: dict[str, str], resource_attributes: dict[str, str]) -> ExportTraceServiceRequest:
    request = ExportTraceServiceRequest()
    resource_spans = request.resource_spans.add()
    resource_spans.resource.attributes.extend(KeyValue(key=k, value=_value(v)) for k, v in resource_attributes.items())
    span = resource_spans.scope_spans.add().spans.add()
    span.trace_id, span.span_id, span.name = b"\x01" * 16, b"\x02" * 8, "chat"
    span.start_time_unix_nano = time.time_ns()
    span.end_time_unix_nano = span.start_time_unix_nano + 1000
    span.attributes.extend(KeyValue(key=k, value=_value(v)) for k, v in span_attributes.items())
    return request


def test_an_otlp_span_names_its_subject_by_its_own_attribute_or_its_resources() -> None:
    [own] = spans_of(_request({"user.id": "u-span", "enduser.id": "u-old"}, {"user.id": "u-resource"})).spans
    [older] = spans_of(_request({"enduser.id": "u-old"}, {})).spans
    [resource] = spans_of(_request({}, {"enduser.id": "u-resource"})).spans
    [none] = spans_of(_request({"gen_ai.operation.name": "chat"}, {"service.name": "svc"})).spans
    assert (own.subject, older.subject, resource.subject, none.subject) == ("u-span", "u-old", "u-resource", None)
    assert "user.id" not in own.attributes and "enduser.id" not in own.attributes  # a field now, not an attribute
    [custom] = spans_of(_request({"customer.id": "c-1", "user.id": "u-1"}, {}), subjects=("customer.id",)).spans
    assert custom.subject == "c-1" and "customer.id" not in custom.attributes


def test_the_subject_attributes_are_a_setting() -> None:
    assert Settings.from_env({}).subject_attributes == ("user.id", "enduser.id")
    assert Settings.from_env({"AGENTLOG_SUBJECT_ATTRIBUTES": " customer.id , user.id "}).subject_attributes == (
        "customer.id", "user.id")
    with pytest.raises(ConfigError, match="AGENTLOG_SUBJECT_ATTRIBUTES"):
        Settings.from_env({"AGENTLOG_SUBJECT_ATTRIBUTES": " , "})
