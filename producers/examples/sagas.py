"""The book-demo saga ("Book Demo Meeting") and a refund flow, over the simulated services."""

from __future__ import annotations

from agentlog.producers.examples.services import Services
from agentlog.producers.saga import Retry, Saga


def book_demo_meeting(services: Services, *, lead_id: str = "lead-456", booking_on_crash: str = "rerun") -> Saga:
    """Qualify the lead, create the CRM opportunity, book the demo; without a free slot, undo the first two.

    ``booking_on_crash``: whether a booking in flight at a crash is run again or undone."""
    saga = Saga("book_demo_meeting")
    saga.add_step("qualify_lead", services.qualify_lead, services.mark_lead_unqualified, lead_id=lead_id)
    saga.add_step("create_opportunity", services.create_opportunity, services.delete_opportunity,
                  lead_id=lead_id, deal_value=24_000.0)
    saga.add_step("book_demo_slot", services.book_calendar_slot, services.cancel_calendar_slot,
                  retry=Retry(attempts=3, backoff=0.05), on_crash=booking_on_crash, rep_id="rep-7", lead_id=lead_id,
                  time="2026-12-03T15:00:00Z")
    return saga


def refund_flow(services: Services, *, order_id: str = "ORD-5521", amount: float = 44.99) -> Saga:
    """Issue the refund, then tell the customer; the notification needs no undo."""
    saga = Saga("refund_flow")
    saga.add_step("issue_refund", services.issue_refund, services.reverse_refund, order_id=order_id, amount=amount)
    saga.add_step("notify_customer", services.notify_customer, None, needs_compensation=False,
                  order_id=order_id, message=f"Your refund of ${amount:.2f} is on its way.")
    return saga
