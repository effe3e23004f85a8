"""Simulated services the example agents call: a CRM, a calendar and a payment gateway, in memory.

Each operation takes the saga's idempotency key and does nothing the second time it sees it.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Any


class NoSlotsAvailable(Exception):
    pass


@dataclass
class Services:
    free_slots: int = 0
    leads: dict[str, str] = field(default_factory=dict)
    opportunities: dict[str, dict[str, Any]] = field(default_factory=dict)
    bookings: dict[str, dict[str, Any]] = field(default_factory=dict)
    refunds: dict[str, dict[str, Any]] = field(default_factory=dict)
    calls: list[tuple[str, str]] = field(default_factory=list)
    """(operation, idempotency key) of every call, to see what ran and how often."""
    _seen: dict[str, Any] = field(default_factory=dict)
    _ids: Any = field(default_factory=lambda: itertools.count(101))

    def _once(self, operation: str, key: str, effect) -> Any:
        self.calls.append((operation, key))
        if (operation, key) not in self._seen:
            self._seen[(operation, key)] = effect()
        return self._seen[(operation, key)]

    # sales agent
    async def qualify_lead(self, lead_id: str, *, idempotency_key: str) -> dict:
        def effect():
            self.leads[lead_id] = "qualified"
            return {"lead_id": lead_id, "score": 87}
        return self._once("qualify_lead", idempotency_key, effect)

    async def mark_lead_unqualified(self, lead_id: str, *, result: dict, idempotency_key: str) -> dict:
        def effect():
            self.leads[lead_id] = "unqualified"
            return {"lead_id": lead_id, "status": "unqualified"}
        return self._once("mark_lead_unqualified", idempotency_key, effect)

    # CRM agent
    async def create_opportunity(self, lead_id: str, deal_value: float, *, idempotency_key: str) -> dict:
        def effect():
            opportunity_id = f"opp-{next(self._ids)}"
            self.opportunities[opportunity_id] = {"lead_id": lead_id, "deal_value": deal_value}
            return {"opportunity_id": opportunity_id}
        return self._once("create_opportunity", idempotency_key, effect)

    async def delete_opportunity(self, lead_id: str, deal_value: float, *, result: dict,
                                 idempotency_key: str) -> dict:
        def effect():
            self.opportunities.pop(result["opportunity_id"], None)
            return {"deleted": result["opportunity_id"]}
        return self._once("delete_opportunity", idempotency_key, effect)

    # scheduling agent
    async def book_calendar_slot(self, rep_id: str, lead_id: str, time: str, *, idempotency_key: str) -> dict:
        def effect():
            if self.free_slots <= 0:
                raise NoSlotsAvailable(f"no available slots for {rep_id} at {time}")
            self.free_slots -= 1
            booking_id = f"booking-{next(self._ids)}"
            self.bookings[booking_id] = {"rep_id": rep_id, "lead_id": lead_id, "time": time}
            return {"booking_id": booking_id}
        return self._once("book_calendar_slot", idempotency_key, effect)

    async def cancel_calendar_slot(self, rep_id: str, lead_id: str, time: str, *, result: dict | None,
                                   idempotency_key: str) -> dict:
        """``result`` is None when the booking was in flight at a crash: look it up by its key."""
        def effect():
            booking = result or self._seen.get(("book_calendar_slot", idempotency_key))
            if booking is None:
                return {"cancelled": None}
            self.bookings.pop(booking["booking_id"], None)
            self.free_slots += 1
            return {"cancelled": booking["booking_id"]}
        return self._once("cancel_calendar_slot", idempotency_key, effect)

    # refund agent
    async def issue_refund(self, order_id: str, amount: float, *, idempotency_key: str) -> dict:
        def effect():
            refund_id = f"REF-{3200 + next(self._ids)}"
            self.refunds[refund_id] = {"order_id": order_id, "amount": amount}
            return {"refund_id": refund_id, "status": "processed"}
        return self._once("issue_refund", idempotency_key, effect)

    async def reverse_refund(self, order_id: str, amount: float, *, result: dict, idempotency_key: str) -> dict:
        def effect():
            self.refunds.pop(result["refund_id"], None)
            return {"reversed": result["refund_id"]}
        return self._once("reverse_refund", idempotency_key, effect)

    async def notify_customer(self, order_id: str, message: str, *, idempotency_key: str) -> dict:
        return self._once("notify_customer", idempotency_key, lambda: {"sent": True, "order_id": order_id})
