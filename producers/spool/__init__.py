"""The durable spool: events the broker did not acknowledge in time, kept on local disk and sent on."""

from agentlog.producers.spool.errors import SpoolFull, SpoolUnusable
from agentlog.producers.spool.spool import Figures, Spool

__all__ = ["Figures", "Spool", "SpoolFull", "SpoolUnusable"]
