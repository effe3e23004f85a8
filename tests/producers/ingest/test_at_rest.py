"""No text waits in the clear in the ingest's tables: a staged span is sealed under its trace's key, the outbox
holds events sealed as the log does, and a flushed span keeps only its ids; a staged span whose subject is
forgotten before it is flushed is left out. Against the real Postgres and key store (no broker needed)."""

from __future__ import annotations

import time
import uuid

from agentlog.deploy import clients
from agentlog.deploy.credentials import PostgresRole
from agentlog.deploy.keys import KeyStore, Opener
from agentlog.deploy.settings import Settings
from agentlog.producers.ingest.staging import Staging
from agentlog.producers.otel import Span
from agentlog.schemas import Codec


def _trace(marker: str, subject: str | None) -> list[Span]:
    trace_id, now = uuid.uuid4().hex, time.time_ns() - 5_000_000_000
    said = f'[{{"role": "user", "parts": [{{"type": "text", "content": "I am {marker}"}}]}}]'
    answer = f'[{{"role": "assistant", "parts": [{{"type": "text", "content": "hello {marker}"}}]}}]'
    return [Span(trace_id, "01" * 8, "invoke_agent triage", now, now + 3_000, {
                "gen_ai.operation.name": "invoke_agent", "gen_ai.agent.name": "triage",
                "gen_ai.input.messages": said, "gen_ai.output.messages": answer}, subject=subject),
            Span(trace_id, "02" * 8, "chat", now + 1_000, now + 2_000, {
                "gen_ai.operation.name": "chat", "gen_ai.request.model": "gpt-4o", "gen_ai.input.messages": said},
                 parent_span_id="01" * 8, subject=subject)]


def _bound(settings: Settings, subject: str, seconds: float = 10) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        with clients.postgres(settings, role=PostgresRole.OWNER, schema=settings.keys_schema) as conn:
            if conn.execute("SELECT 1 FROM data_keys WHERE subject_id = %s", (subject,)).fetchone():
                return
        time.sleep(0.05)
    raise AssertionError(f"no key was bound to {subject} within {seconds}s")


def _raw(staging: Staging, table: str) -> list[bytes]:
    column = "span::text::bytea" if table == "spans" else "event"
    with staging.connect() as conn:
        return [bytes(value) for (value,) in conn.execute(f"SELECT {column} FROM {table}").fetchall()]


def test_staged_spans_and_the_outbox_hold_no_text_in_the_clear(isolated: Settings) -> None:
    tag = uuid.uuid4().hex[:10]
    kept, gone = f"zqstagedkept{tag}", f"zqstagedgone{tag}"
    staging = Staging(isolated, settle=0, deadline=0)
    staging.setup()
    try:
        forgotten, remembered = _trace(gone, f"gone-{tag}"), _trace(kept, f"user-{tag}")
        assert staging.stage(remembered + forgotten) == 4
        staged = _raw(staging, "spans")
        assert len(staged) == 4 and not any(kept.encode() in s or gone.encode() in s for s in staged)
        _bound(isolated, f"gone-{tag}")  # the staged spans' key, bound to the trace and its subject
        store = KeyStore(isolated)
        try:  # what `agentlog forget --subject` does to the key store
            gone_keys = store.delete(subject_id=f"gone-{tag}")
            assert len(gone_keys.key_ids) == 1 and gone_keys.conversations == []  # the staged spans' key alone
        finally:
            store.close()
        with staging.connect() as conn:  # one staged row altered: it is left out, the others flush
            conn.execute("UPDATE spans SET span = jsonb_set(span, '{sealed}', to_jsonb('AAAA' || (span->>'sealed'))) "
                         "WHERE trace_id = %s AND span_id = %s", (remembered[1].trace_id, remembered[1].span_id))
            conn.commit()
            made = staging.flush(conn)
        assert {e.subject_id for e, _ in made} == {f"user-{tag}"}  # the forgotten subject's spans were left out
        outbox = _raw(staging, "outbox")
        assert outbox and not any(kept.encode() in value for value in outbox)
        assert set(_raw(staging, "spans")) == {b"{}"}  # flushed: only the ids are kept
        opener = Opener(isolated)
        try:
            opened = opener.open_all([Codec().decode(value) for value in outbox])
        finally:
            opener.close()
        assert [e.payload.get("user_message") for e in opened if e.sequence_number == 1] == [f"I am {kept}"]
    finally:
        staging.close()
