"""Watches the webhook fan-out's backlog against the bound of its stream, so an operator hears about
it before events are refused (warning at 75% of the bound, where request events are still
accepted until 90%) and when they are (error, with the count): once per episode, not per event.
An episode ends when the backlog is back under half the bound."""

from __future__ import annotations

import logging

log = logging.getLogger("inferq.webhooks")
WARN_AT, CLEAR_AT = 0.75, 0.5


class BacklogWatch:
    def __init__(self, bound: int) -> None:
        self.bound = bound
        self.warned = False
        self.dropping = False
        self.dropped_seen: int | None = None  # the refused-events counter at the last check
        self.dropped_in_episode = 0

    def observe(self, unacknowledged: int, dropped_total: int) -> None:
        """One check: events not yet acknowledged by the fan-out, and the refused-events counter."""
        new = 0 if self.dropped_seen is None else max(0, dropped_total - self.dropped_seen)
        self.dropped_seen = dropped_total
        if unacknowledged >= WARN_AT * self.bound and not self.warned:
            self.warned = True
            log.warning(
                "webhook fan-out is behind: %d events unacknowledged, %d%% of the bound of %d "
                "(INFERQ_WEBHOOK_EVENTS_MAXLEN); request events will be refused from 90%%",
                unacknowledged,
                round(100 * unacknowledged / self.bound),
                self.bound,
            )
        if new:
            self.dropped_in_episode += new
            if not self.dropping:
                self.dropping = True
                self.warned = True
                log.error(
                    "webhook events are being refused: %d so far, the fan-out's stream is at its bound of %d "
                    "(INFERQ_WEBHOOK_EVENTS_MAXLEN); see inferq_webhook_events_dropped_total",
                    new,
                    self.bound,
                )
        if self.warned and unacknowledged < CLEAR_AT * self.bound and not new:
            log.warning(
                "webhook fan-out caught up: %d events unacknowledged; %d events were refused meanwhile",
                unacknowledged,
                self.dropped_in_episode,
            )
            self.warned = self.dropping = False
            self.dropped_in_episode = 0
