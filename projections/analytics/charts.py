"""The analytics page's charts: their SQL, over the fact table and the hourly aggregates."""

from __future__ import annotations

from typing import Any, Callable

TOOL_CALLS_OVER_TIME = """
    SELECT toStartOfInterval(occurred_at, INTERVAL {seconds} SECOND) AS at, tool_name, count() AS calls
      FROM agent_events
     WHERE event_type = 'tool_called' AND occurred_at > now() - INTERVAL 1 DAY
     GROUP BY at, tool_name ORDER BY at, tool_name"""
TOOL_SPAN = """
    SELECT toUInt32(dateDiff('second', min(occurred_at), max(occurred_at))) AS span FROM agent_events
     WHERE event_type = 'tool_called' AND occurred_at > now() - INTERVAL 1 DAY"""
FAILURES_BY_TYPE = """
    SELECT kind, type, sum(failures) AS failures FROM failures_hourly
     GROUP BY kind, type ORDER BY failures DESC, kind, type LIMIT 12"""
COST_BY_MODEL = """
    SELECT model, sum(calls) AS calls, sum(input_tokens) AS input_tokens, sum(output_tokens) AS output_tokens,
           round(sum(cost_usd), 4) AS cost_usd
      FROM llm_usage_hourly GROUP BY model ORDER BY cost_usd DESC"""
_BUCKETS = (60, 300, 900, 3600)
"""Bucket widths for tool calls over time: the narrowest that draws the span in at most 90 bars."""

Rows = list[dict[str, Any]]


def charts(run: Callable[[str], Rows]) -> dict[str, Any]:
    """Tool calls over time, failures by type, tokens and cost by model; ``run`` runs one statement (through
    the SQL box, so the charts read what an analyst may)."""
    span = (run(TOOL_SPAN) or [{"span": 0}])[0]["span"] or 0
    seconds = next((b for b in _BUCKETS if span / b <= 90), 3600)
    return {"bucket_seconds": seconds, "tool_calls": run(TOOL_CALLS_OVER_TIME.format(seconds=seconds)),
            "failures": run(FAILURES_BY_TYPE), "models": run(COST_BY_MODEL)}
