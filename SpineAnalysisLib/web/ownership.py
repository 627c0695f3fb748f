"""Which page may change the case: the rules of the review page's tab ownership, without any networking.

The server renders each view once and shares one scene, so one page (browser tab or window) owns the case at a
time (:mod:`.tabs` says why and applies these rules to the real websocket connections). A page is known by two
names: its connection (the websocket; a new one after every reconnection) and its page id (made by the page
when it loads and kept while it lives, so it names the same page over a reconnection; the id of the page it
replaced in the same tab, kept in the tab's ``sessionStorage``, tells a reload).

- The first page that claims owns the case; a later one waits ("other").
- *Take over here* in a waiting page moves the case to it at once; the former owner is told it was taken
  ("taken") and may take it back the same way.
- A dropped connection keeps the case for its page for :data:`RECONNECT_GRACE_S` against the pages that were
  waiting: the same page reconnecting (same page id), or reloaded in the same tab (its previous id), gets it back
  if nobody took it over meanwhile. After that the page that has waited longest gets it. A page that opens while
  nobody holds the case gets it at once (a tab closed and the address opened again); the dropped page, when it
  comes back, is then told the case was taken over.
"""

from __future__ import annotations

import time

OWNER, WAITING, TAKEN = "owner", "other", "taken"
#: How long the case stays with a page whose connection dropped before a waiting page gets it.
RECONNECT_GRACE_S = 5.0


class TabOwnership:
    """Roles of connections. Every method returns ``{connection: role}``: whom to tell what."""

    def __init__(self, grace_s: float = RECONNECT_GRACE_S, clock=time.monotonic):
        self.grace_s = grace_s
        self.clock = clock
        self.owner: str | None = None  # the owner's connection; None while nobody has the case
        self.owner_page: str | None = None  # the owner's page id, kept over a dropped connection
        self.released_at: float | None = None  # when the owner's connection closed
        self.pages: dict[str, str] = {}  # connection -> page id, of the pages that claimed
        self.waiting: list[str] = []  # connections of waiting pages, longest waiting first
        self.taken_pages: set[str] = set()  # page ids the case was taken from (told so when they reconnect)

    def may_change(self, connection: str | None) -> bool:
        return connection is not None and connection == self.owner

    def claim(self, connection: str, page: str, previous_page: str = "") -> dict[str, str]:
        """A page has loaded or reconnected (``previous_page``: the page this tab showed before a reload)."""
        self.pages[connection] = page
        if connection == self.owner:
            return {connection: OWNER}
        if self.owner is None and connection not in self.waiting:
            # nobody holds the case: a page that opens (or the owner's page coming back) gets it; only the pages
            # that were already waiting wait for the grace period (:meth:`expire`), so a dropped page keeps it
            return self._give(connection)
        if page == self.owner_page:  # its old connection is not closed yet, but a page has one connection: that one is dead
            return self._give(connection)
        if connection not in self.waiting:
            self.waiting.append(connection)
        return {connection: TAKEN if {page, previous_page} & self.taken_pages else WAITING}

    def take_over(self, connection: str, page: str) -> dict[str, str]:
        """*Take over here*: this page owns the case from now on; the former owner's page is told so."""
        self.pages[connection] = page
        former = self.owner
        told = self._give(connection)
        if former is not None and former != connection:
            self.waiting.append(former)
            told[former] = TAKEN
        return told

    def close(self, connection: str) -> dict[str, str]:
        """A connection closed. The owner's page keeps the case for the grace period (:meth:`expire`)."""
        self.pages.pop(connection, None)
        if connection in self.waiting:
            self.waiting.remove(connection)
        if connection == self.owner:
            self.owner, self.released_at = None, self.clock()
        return {}

    def expire(self) -> dict[str, str]:
        """After the grace period the page that has waited longest gets a case nobody holds."""
        if self.owner is None and self.owner_page is not None and self.waiting and self._grace_over():
            return self._give(self.waiting[0])
        return {}

    def _grace_over(self) -> bool:
        return self.released_at is not None and self.clock() - self.released_at >= self.grace_s

    def _give(self, connection: str) -> dict[str, str]:
        page = self.pages.get(connection)
        if self.owner_page is not None and self.owner_page != page:  # told so when it comes back
            self.taken_pages.add(self.owner_page)
        self.owner, self.owner_page, self.released_at = connection, page, None
        if connection in self.waiting:
            self.waiting.remove(connection)
        self.taken_pages.discard(self.owner_page)
        return {connection: OWNER}
