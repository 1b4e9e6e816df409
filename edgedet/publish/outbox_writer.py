"""The outbox writer thread ("edgedet-outbox"): each turn takes the pending rows and the
acknowledgements, commits (outbox_commit.py), then hands committed rows to MQTT in id order, at most
``max_inflight`` unacknowledged, and decides what each PUBACK/PUBCOMP means for its row (delete,
refused, or with ``outbox.unrouted.retry`` kept to be sent again).
"""

from __future__ import annotations

import sqlite3
import time
from typing import List, Tuple

from edgedet.publish.outbox_commit import OutboxCommits
from edgedet.publish.outbox_state import ACK_FAILED, ACK_NO_SUBSCRIBERS, Inflight, is_published, log
from edgedet.publish.outbox_store import Row


class OutboxWriter(OutboxCommits):
    def _run(self) -> None:
        try:
            while True:
                # a recheck (paho marks a message published just after on_publish) is due in moments
                timeout = 0.002 if self._recheck else (0.05 if self._inflight or self._db_deletes else 0.2)
                self._wake.wait(timeout)
                self._wake.clear()
                with self._lock:
                    stopping = self._stopping
                self._turn()
                with self._idle:
                    self._idle.notify_all()
                if stopping:
                    with self._lock:
                        if not self._pending:
                            break
        except BaseException as exc:  # kept for status(); put() refuses from now on
            self.failure = exc
            log.error("outbox writer failed: %s", exc, exc_info=True)
        finally:
            with self._idle:
                self._idle.notify_all()

    def _turn(self) -> None:
        with self._lock:
            batch, self._pending = self._pending, []
            self._committing, self._committing_bytes = len(batch), self._pending_bytes
            self._pending_bytes = 0
        self._take_acks()
        self._commit(batch)
        self.numbering.handled(batch)
        self._publish_snapshot(committed=True)
        if batch:
            with self._idle:  # the callers of this batch go on now, not after the dispatch
                self._idle.notify_all()
        self._dispatch()
        self._publish_snapshot()

    def _take_acks(self) -> None:
        acks = self._recheck
        self._recheck = []
        while self._acks:
            acks.append(self._acks.popleft())
        for mid, outcome, when in acks:
            entry = self._inflight.get(mid)
            if entry is None:
                continue  # a QoS 0 or non-durable message
            if not is_published(entry.info):
                # paho marks the message published just after on_publish returns (or the mid
                # belongs to a QoS 0 message that reused it): look again on the next turn
                self._recheck.append((mid, outcome, when))
                continue
            del self._inflight[mid]
            self._inflight_ids.discard(entry.row_id)
            if outcome == ACK_FAILED:
                self._bump("rejected")
                self._warn.warning(
                    "rejected", "broker refused a durable message (PUBACK reason code >= 0x80); dropped"
                )
            elif outcome == ACK_NO_SUBSCRIBERS and self._keep_unrouted(entry, when):
                continue  # stays stored, not acknowledged: sent again
            else:
                self._bump("acked")
                self.latencies_ms.append((when - entry.created) * 1000.0)
                if outcome != ACK_NO_SUBSCRIBERS:
                    self._unrouted_probe = False  # a subscriber took it: the rest may follow
                else:
                    self._bump("no_subscribers")
                    self._warn.warning(
                        "no-subscribers",
                        "broker had no subscriber for a durable message (PUBACK 'No matching subscribers'): "
                        "it discarded it; are the consumers subscribed (a restarted mosquitto forgets "
                        "shared subscriptions until their members subscribe again)?",
                    )
            self._forget(entry.row_id, entry.size, entry.where)

    def _keep_unrouted(self, entry: Inflight, when: float) -> bool:
        """unrouted.retry: keep a message the broker discarded for lack of subscribers, to send it
        again (same id and seq) after retry_after_s, unless it is older than give_up_after_s."""
        unrouted = self._cfg.unrouted
        if not unrouted.retry or entry.where == "gone" or when - entry.created >= unrouted.give_up_after_s:
            return False
        self._unrouted_from = min(entry.row_id, self._unrouted_from or entry.row_id)
        self._unrouted_at = time.monotonic() + unrouted.retry_after_s
        self._bump("unrouted_retries")
        self._warn.warning(
            "unrouted",
            "broker had no subscriber for a durable message (PUBACK 'No matching subscribers'): kept, "
            "sent again every %.1f s (later ones wait) until a subscriber takes it or it is %.0f s old",
            unrouted.retry_after_s,
            unrouted.give_up_after_s,
        )
        return True

    def _forget(self, row_id: int, size: int, where: str) -> None:
        """An acknowledged (or refused) row: delete it from wherever it lives now."""
        if where == "mem":
            self._mem.pop(row_id)
        elif where == "db":
            self._db_deletes[row_id] = size

    def _dispatch(self) -> None:
        send = self._send
        with self._lock:
            connected = self._connected
            resync_until = self._resync_until
        if send is None or not connected:
            return
        if resync_until is not None:
            if self._inflight and time.monotonic() < resync_until:
                return  # paho is re-sending the unacknowledged ones first: keeps the order
            if self._inflight:
                log.warning(
                    "outbox: %d message(s) not acknowledged after reconnect; going on", len(self._inflight)
                )
            with self._lock:
                self._resync_until = None
        if self._unrouted_from is not None:
            if time.monotonic() < self._unrouted_at:
                return  # a message waits for a subscriber: the ones behind it wait too (order)
            # from the first discarded one on, again; what was acknowledged meanwhile is skipped
            self._cursor = min(self._cursor, self._unrouted_from - 1)
            self._unrouted_from = None
            self._unrouted_probe = True
        room = self._max_inflight - len(self._inflight)
        if self._unrouted_probe:
            # the first discarded message is sent again alone; the rest follow once it was routed
            room = 0 if self._inflight else 1
        if room <= 0:
            return
        for row, where in self._fetch(room):
            try:
                info = send(row.topic, row.payload, row.qos, row.retain)
            except Exception as exc:  # a message the client can never send: do not block the rest
                self._bump("rejected")
                self._warn.error(
                    "send", "outbox: durable message on %s refused and dropped: %s", row.topic, exc
                )
                self._cursor = max(self._cursor, row.id)
                self._forget(row.id, len(row.payload), where)
                continue
            if info is None:
                return  # client queue full or not connected after all: retry next turn
            self._cursor = max(self._cursor, row.id)
            self._sent_top = max(self._sent_top, row.id)
            self._inflight[info.mid] = Inflight(row.id, info, len(row.payload), row.created, where)
            self._inflight_ids.add(row.id)

    def _fetch(self, limit: int) -> List[Tuple[Row, str]]:
        """Rows after the cursor in id order, from the store and the memory queue merged; rows in
        flight or acknowledged are skipped (the cursor goes back to 0 when a file is found again)."""
        out: List[Tuple[Row, str]] = []
        skip = self._inflight_ids
        if self._store is not None and self._store.is_open:
            try:
                # after a rewind (a file found again, unrouted.retry) rows already in flight or
                # acknowledged lie after the cursor: read past them
                rewound = self._cursor == 0 or self._cursor < self._sent_top
                extra = len(skip) + len(self._db_deletes) if rewound else 0
                for row in self._store.fetch(self._cursor, limit + extra):
                    if row.id not in self._db_deletes and row.id not in skip:
                        out.append((row, "db"))
            except sqlite3.Error as exc:
                self._warn.error("read", "outbox %s: cannot read: %s", self.path, exc)
        if self._mem:
            mem = [(r, "mem") for r in self._mem.after(self._cursor, skip, limit)]
            out = sorted(out + mem, key=lambda x: x[0].id)
        return out[:limit]
