"""One browser tab shows and edits the case at a time.

trame-slicer (2.0.0, through trame-rca 2.11) renders each view in one server-side VTK render window and
streams the same frames to every connected page; each page reports its view sizes (``trame.rca.size``) and
the server resizes that one window to the last size it was sent (``RcaViewAdapter.update_size`` ignores
which page sent it). Two tabs of different sizes therefore show each other's view size: a 900 x 700 tab
made a 1600 x 1000 tab show its sagittal view enlarged and cut. There are no per-page views, and trame's
state (tool, segment, table) is shared by all pages as well.

So the first tab that opens the page owns it; a later tab is told that the case is open in another tab and
shows no views (it sends no sizes), until the owner's connection closes: then the longest-waiting tab takes
over. Which page asks is known from wslink: it records the connection whose message it is handling
(``last_active_client_id``) before calling the handler, and a trigger's Python function runs before the
handler's first ``await``. The role goes only to that page (``publish(..., client_id=...)``) as its
``tab_role`` (client-only state: ``owner`` or ``other``).
"""

from __future__ import annotations

from wslink.websocket import LinkProtocol

OWNER, OTHER = "owner", "other"
STATE_TOPIC = "trame.state.topic"  # trame's server -> page state updates


class OneTab(LinkProtocol):
    """Connections in the order they opened; the page of ``owner`` is the one that shows the views."""

    def __init__(self):
        super().__init__()
        self.connected: list[str] = []
        self.waiting: list[str] = []  # pages told they are "other", longest waiting first
        self.owner: str | None = None

    def register(self, root_protocol) -> None:
        """Hook into the server's websocket protocol (``server.add_protocol_to_configure``)."""
        root_protocol.registerLinkProtocol(self)

    # wslink calls these for every websocket connection
    def onConnect(self, request, client_id):
        self.connected.append(client_id)

    def onClose(self, client_id):
        for ids in (self.connected, self.waiting):
            if client_id in ids:
                ids.remove(client_id)
        if client_id == self.owner:
            self.owner = None
            if self.waiting:
                self._tell(self.waiting.pop(0), OWNER)

    def claim(self) -> str:
        """Called by a page when it has loaded (a trigger): it becomes the owner when there is none, otherwise it
        waits. Returns the role it was told."""
        client_id = self._caller()
        if client_id is None:  # not called through wslink (a test calling the app directly): nothing to tell
            return OWNER
        if self.owner is None or self.owner == client_id or self.owner not in self.connected:
            self._tell(client_id, OWNER)
            return OWNER
        if client_id not in self.waiting:
            self.waiting.append(client_id)
        self._tell(client_id, OTHER)
        return OTHER

    def _tell(self, client_id: str, role: str) -> None:
        if role == OWNER:
            self.owner = client_id
        self.publish(STATE_TOPIC, {"tab_role": role}, client_id=client_id)

    def _caller(self) -> str | None:
        handler = getattr(self.publish, "__self__", None)  # wslink's WslinkHandler, whose publish this is
        return getattr(getattr(handler, "web_app", None), "last_active_client_id", None)
