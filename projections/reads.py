"""What the read side asks of the stores, by question: the operators' views and the archive (Postgres),
full-text search (Elasticsearch), analysts' SQL and its charts (ClickHouse).

Like the registry, this is how code outside ``projections/`` reaches a store's queries: it imports this
module, never a store's package. Each name is the store's own function or module, unchanged.
"""

from agentlog.projections.analytics import queries as sql
from agentlog.projections.analytics.charts import charts
from agentlog.projections.dashboard import queries as dashboard
from agentlog.projections.dashboard.projection import connect
from agentlog.projections.dashboard.queries import events_of, page_after
from agentlog.projections.search.queries import MAX_CHARACTERS, BadQuery, marked, search

__all__ = ["MAX_CHARACTERS", "BadQuery", "charts", "connect", "dashboard", "events_of", "marked", "page_after",
           "search", "sql"]
