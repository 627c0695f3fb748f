"""One browser tab shows and edits the case at a time; the server refuses every change from the others.

trame-slicer (2.0.0, through trame-rca 2.11) renders each view in one server-side VTK render window and
streams the same frames to every connected page; each page reports its view sizes (``trame.rca.size``) and
the server resizes that one window to the last size it was sent (``RcaViewAdapter.update_size`` ignores
which page sent it). Two tabs of different sizes therefore show each other's view size: a 900 x 700 tab
made a 1600 x 1000 tab show its sagittal view enlarged and cut. There are no per-page views, and trame's
state (tool, segment, table) is shared by all pages as well.

So one page owns the case (:mod:`.ownership` has the rules: first come, *Take over here*, a dropped connection
keeps the case for its page a few seconds). The others show a note and the *Take over here* button, and the
server enforces it: :class:`OneTab` sits in front of wslink's method table, and a page that does not own the
case may only load the state, report its life cycle (connected, unmounted, exited) or an error, and claim or
take over; its triggers (paint tool, undo,
*Segment*, exports ...), state changes, view sizes and mouse events are refused, logged once per page and kind,
and its page is told what was not applied. Which page sends a message is known from wslink: it records the
connection whose message it is handling (``last_active_client_id``) just before calling the method.

An edit in progress is not lost at a hand-over: Slicer's paint and erase apply a stroke when the mouse button
is released, so the former owner's buttons still held down are released (at the last position the server
received) before the new owner gets the case; the stroke is applied and the former owner's page says so.
"""

from __future__ import annotations

import asyncio
import sys

from wslink.websocket import LinkProtocol

from .ownership import OWNER, TAKEN, TabOwnership

STATE_TOPIC = "trame.state.topic"  # trame's server -> page state updates
OPEN_TO_ALL = {"trame.state.get", "trame.error.client"}  # what a page that does not own the case may still call
TRIGGER, STATE_UPDATE, VIEW_EVENT, LIFE_CYCLE = "trame.trigger", "trame.state.update", "trame.rca.event", "trame.lifecycle.update"


class OneTab(LinkProtocol):
    """The tab ownership of one review server (``server``: trame's, for its triggers and state);
    ``open_triggers``: the functions a page may trigger without owning the case (claim, take over); ``labels``:
    trigger function name -> what the page calls it (the note of a refusal)."""

    def __init__(self, server, open_triggers=(), labels: dict[str, str] | None = None, ownership: TabOwnership | None = None):
        super().__init__()
        self.controller, self.state = server.controller, server.state
        self.open_triggers = set(open_triggers)
        self.rules = ownership or TabOwnership()
        self.labels = dict(labels or {})
        self._gated = False
        self._logged: set[tuple[str, str]] = set()
        self._held: dict[str, dict] = {}  # the owner's mouse buttons held down per view: view -> last event
        self._notes: dict[str, list[str]] = {}  # connection -> what of it was refused, as its page says it
        self._dropped_stroke_page: str | None = None  # the page whose stroke was applied when its connection dropped

    def register(self, root_protocol) -> None:
        """Hook into the server's websocket protocol (``server.add_protocol_to_configure``)."""
        root_protocol.registerLinkProtocol(self)

    # -- wslink calls these for every websocket connection ---------------------------------------------
    def onConnect(self, request, client_id):
        if not self._gated:  # wslink's method table is complete once connections come
            self._gate()

    def onClose(self, client_id):
        was_owner = self.rules.owner == client_id
        page = self.rules.pages.get(client_id)
        if was_owner and self._held:  # its release will not come: the stroke is applied as far as it came
            self._release_held(None)
            self._dropped_stroke_page = page
        self.rules.close(client_id)
        self._notes.pop(client_id, None)
        if was_owner:
            asyncio.get_running_loop().call_later(self.rules.grace_s + 0.05, self._expire)

    # -- the page's own calls --------------------------------------------------------------------------
    def claim(self, page: str = "", previous_page: str = "") -> str:
        """A page has loaded or reconnected. Returns the role it was told (owner without wslink: a test)."""
        client_id = self._caller()
        if client_id is None:
            return OWNER
        told = self.rules.claim(client_id, str(page) or client_id, str(previous_page or ""))
        self._tell(told)
        if told[client_id] == OWNER and self._dropped_stroke_page in (page, previous_page):
            self._dropped_stroke_page = None
            self._note(client_id, "your stroke in progress when the connection dropped was applied (up to where it had reached the server)")
        return told[client_id]

    def take_over(self, page: str = "") -> str:
        """*Take over here*: the former owner's held buttons are released first (its stroke is applied)."""
        client_id = self._caller()
        if client_id is None:
            return OWNER
        former = self.rules.owner
        if former is not None and former != client_id:
            self._release_held(former)
        self._tell(self.rules.take_over(client_id, str(page) or client_id))
        return OWNER

    # -- enforcement -------------------------------------------------------------------------------------
    def _gate(self) -> None:
        handler = self._handler()
        if handler is None:
            return
        for method, (protocol, function) in list(handler.functionMap.items()):
            if method not in OPEN_TO_ALL:
                handler.functionMap[method] = (protocol, self._guarded(method, function))
        self._gated = True

    def _guarded(self, method: str, function):
        def guarded(protocol, *args, **kwargs):
            client_id = self._caller()
            if method == TRIGGER and args and self.controller.trigger_fn(args[0]) in self.open_triggers:
                return function(protocol, *args, **kwargs)
            if method == LIFE_CYCLE and args and str(args[0]).startswith("client_"):  # every page reports these
                return function(protocol, *args, **kwargs)
            if self.rules.may_change(client_id):
                if method == VIEW_EVENT and len(args) >= 3:
                    self._track(args[0], args[2])
                return function(protocol, *args, **kwargs)
            self._refuse(client_id, method, args)
            return None

        guarded.__wrapped__ = function
        return guarded

    def _track(self, view: str, event) -> None:
        """Keep the owner's buttons held down (and where), so a hand-over can release them."""
        if not isinstance(event, dict):
            return
        kind = str(event.get("type", ""))
        if kind.endswith("Press"):
            self._held[view] = dict(event)
        elif kind.endswith("Release"):
            self._held.pop(view, None)
        elif view in self._held and "x" in event:
            self._held[view].update(x=event["x"], y=event["y"])

    def _release_held(self, former: str | None) -> None:
        handler = self._handler()
        held, self._held = self._held, {}
        if not held or handler is None:
            return
        protocol, function = handler.functionMap[VIEW_EVENT]
        function = getattr(function, "__wrapped__", function)
        for view, press in held.items():
            release = dict(press, type=press["type"].replace("Press", "Release"))
            function(protocol, view, "hand-over", release)  # the stroke is applied (Slicer paints on release)
        if former is not None:
            self._note(former, "your stroke in progress was applied (up to where it had reached the server) before the hand-over")

    def _refuse(self, client_id, method: str, args) -> None:
        what = self._what(method, args)
        if (client_id, what) not in self._logged:
            self._logged.add((client_id, what))
            print(f"spineanalysis review: refused {what} from a tab that does not own the case (connection {client_id})",
                  file=sys.stderr, flush=True)
        if method == STATE_UPDATE and args:  # its page goes back to what the server (and the owner) has
            keys = [change.get("key") for change in args[0] if isinstance(change, dict)]
            self.publish(STATE_TOPIC, {k: self.state[k] for k in keys if k in self.state}, client_id=client_id)
        label = self._label(method, args)
        if label and client_id is not None and self.rules.pages.get(client_id):
            self._note(client_id, f"not applied: {label}")

    def _what(self, method: str, args) -> str:
        if method == TRIGGER and args:
            function = self.controller.trigger_fn(args[0])
            return f"trigger {getattr(function, '__name__', args[0])}"
        if method == STATE_UPDATE and args:
            return "state " + ",".join(sorted(str(c.get("key")) for c in args[0] if isinstance(c, dict)))
        return method

    def _label(self, method: str, args) -> str:
        """What the refused message did, in the page's words; empty for what the user did not ask (view focus...)."""
        if method == TRIGGER and args:
            return self.labels.get(getattr(self.controller.trigger_fn(args[0]), "__name__", ""), "")
        if method == VIEW_EVENT and len(args) >= 3 and isinstance(args[2], dict):
            kind = str(args[2].get("type", ""))
            return "a mouse action in a view" if kind.endswith("Press") or "Wheel" in kind else ""  # not its moves
        if method == STATE_UPDATE:
            return "a change of a setting"
        return ""

    def _note(self, client_id: str, note: str) -> None:
        notes = self._notes.setdefault(client_id, [])
        if note not in notes:
            notes.append(note)
            self.publish(STATE_TOPIC, {"tab_notes": list(notes)}, client_id=client_id)

    def _expire(self) -> None:
        self._tell(self.rules.expire())

    def _tell(self, told: dict) -> None:
        for client_id, role in told.items():
            if role == OWNER:
                self._notes.pop(client_id, None)
            payload = {"tab_role": role}
            if role == OWNER or role == TAKEN:
                payload["tab_notes"] = list(self._notes.get(client_id, []))
            self.publish(STATE_TOPIC, payload, client_id=client_id)

    def _handler(self):
        return getattr(self.publish, "__self__", None)  # wslink's WslinkHandler, whose publish this is

    def _caller(self) -> str | None:
        return getattr(getattr(self._handler(), "web_app", None), "last_active_client_id", None)
