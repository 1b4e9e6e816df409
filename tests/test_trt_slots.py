"""Slot rotation for pipelined inference (pure): round robin, in-order collection, back-pressure."""

from __future__ import annotations

import threading
import time

import pytest

from edgedet.backends.tensorrt.slots import SlotOrderError, SlotRing, SlotsFull


def test_round_robin_and_fifo() -> None:
    ring = SlotRing(3)
    handles = [ring.acquire(batch=1) for _ in range(3)]
    assert [h.slot for h in handles] == [0, 1, 2]
    assert ring.in_flight == 3
    with pytest.raises(SlotsFull):
        ring.acquire(batch=1)
    with pytest.raises(SlotOrderError, match="submission order"):
        ring.release(handles[1])
    ring.release(handles[0])
    again = ring.acquire(batch=2)
    assert again.slot == 0 and again.batch == 2 and again.ticket == 3
    for h in (handles[1], handles[2], again):
        assert ring.oldest() == h
        ring.release(h)
    assert ring.in_flight == 0 and ring.oldest() is None
    with pytest.raises(SlotOrderError, match="already collected"):
        ring.release(handles[2])


def test_handles_from_another_ring_are_rejected() -> None:
    a, b = SlotRing(2), SlotRing(2)
    h = a.acquire(1)
    b.acquire(1)
    with pytest.raises(SlotOrderError, match="not issued"):
        b.release(h)


def test_cancel_undoes_the_latest() -> None:
    ring = SlotRing(2)
    first = ring.acquire(1)
    second = ring.acquire(1)
    with pytest.raises(SlotOrderError):
        ring.cancel(first)
    ring.cancel(second)
    assert ring.in_flight == 1
    assert ring.acquire(1).slot == second.slot  # the cancelled slot is handed out again


def test_waiting_for_a_slot_freed_by_another_thread() -> None:
    ring = SlotRing(2)
    held = [ring.acquire(1), ring.acquire(1)]

    def collector() -> None:
        time.sleep(0.1)
        ring.release(held[0])

    t = threading.Thread(target=collector, name="collector")
    t.start()
    third = ring.acquire(1, timeout=5.0)
    t.join()
    assert third.slot == 0
    with pytest.raises(SlotsFull):
        ring.acquire(1, timeout=0.05)
    with pytest.raises(ValueError):
        ring.acquire(0)
    with pytest.raises(ValueError):
        SlotRing(0)


def test_submitter_and_collector_threads_keep_order() -> None:
    ring = SlotRing(3)
    order = []
    done = threading.Event()

    def submitter() -> None:
        for i in range(200):
            h = ring.acquire(1 + i % 4, timeout=5.0)
            order.append(("s", h.ticket))
        done.set()

    collected = []

    def collector() -> None:
        while not (done.is_set() and ring.in_flight == 0):
            h = ring.oldest()
            if h is None:
                time.sleep(0.0005)
                continue
            ring.release(h)
            collected.append(h.ticket)

    threads = [threading.Thread(target=submitter, name="sub"), threading.Thread(target=collector, name="col")]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=20)
    assert collected == list(range(200))
