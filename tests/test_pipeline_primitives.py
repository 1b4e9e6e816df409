"""Latest-frame slots, the frame board, worker failure capture and latency summaries."""

from __future__ import annotations

import threading
import time
from typing import List

import numpy as np
import pytest

from edgedet.pipeline.inference import FrameBoard
from edgedet.pipeline.latency import LatencyRecorder
from edgedet.runtime.slot import LatestSlot
from edgedet.runtime.worker import Worker
from edgedet.types import Letterbox, PreparedFrame


def frame(camera: str, seq: int, released: List[int]) -> PreparedFrame:
    return PreparedFrame(
        camera=camera,
        seq=seq,
        capture_time=time.time(),
        capture_monotonic=time.monotonic(),
        letterbox=Letterbox(1.0, 0.0, 0.0, 4, 4),
        tensor=np.zeros((1, 3, 4, 4), np.float32),
        release=lambda: released.append(seq),
    )


def test_slot_replaces_unread_item_and_counts_drop() -> None:
    dropped: List[int] = []
    slot: LatestSlot[int] = LatestSlot(on_drop=dropped.append)
    slot.put(1)
    slot.put(2)
    assert slot.take(0.1) == 2
    assert slot.dropped == 1 and dropped == [1]
    assert slot.take(0.01) is None


def test_slot_take_wakes_on_put() -> None:
    slot: LatestSlot[str] = LatestSlot()
    threading.Timer(0.05, slot.put, args=("x",)).start()
    assert slot.take(5.0) == "x"


def test_board_round_robin_and_release_of_replaced_frames() -> None:
    released: List[int] = []
    board = FrameBoard()
    a, b = board.add("a"), board.add("b")
    a.put(frame("a", 1, released))
    a.put(frame("a", 2, released))  # replaces 1, which goes back to its pool
    b.put(frame("b", 10, released))
    assert released == [1]
    first = board.take(1, timeout=0.1)
    second = board.take(1, timeout=0.1)
    assert {first[0].camera, second[0].camera} == {"a", "b"}
    assert board.take(1, timeout=0.05) == []


def test_board_batches_across_cameras() -> None:
    board = FrameBoard()
    for name in "abc":
        board.add(name).put(frame(name, 0, []))
    batch = board.take(3, timeout=0.1)
    assert sorted(f.camera for f in batch) == ["a", "b", "c"]


def test_board_remove_releases_leftover() -> None:
    released: List[int] = []
    board = FrameBoard()
    board.add("a").put(frame("a", 5, released))
    board.remove("a")
    assert released == [5] and "a" not in board.slots


class Failing(Worker):
    def __init__(self) -> None:
        super().__init__("failing")
        self.steps = 0
        self.torn_down = False

    def step(self) -> None:
        self.steps += 1
        if self.steps == 3:
            raise RuntimeError("boom")

    def teardown(self) -> None:
        self.torn_down = True


def test_worker_keeps_its_failure_for_the_supervisor() -> None:
    worker = Failing()
    worker.start()
    assert worker.join(5.0)
    assert isinstance(worker.failure, RuntimeError) and worker.torn_down
    assert worker.steps == 3


def test_latency_percentiles_are_bounded_window() -> None:
    rec = LatencyRecorder(window=100)
    for v in range(1000):
        rec.add("infer", float(v))
    pct = rec.percentiles("infer")
    assert pct is not None and pct["n"] == 100
    assert pct["p50_ms"] == pytest.approx(949.5)
    assert rec.percentiles("missing") is None


def test_letterbox_maps_back_and_clips_to_the_source() -> None:
    lb = Letterbox(scale=0.5, pad_x=0.0, pad_y=10.0, source_width=100, source_height=50)
    boxes = np.array([[10.0, 20.0, 30.0, 25.0], [-5.0, 5.0, 300.0, 200.0]], np.float32)
    out = lb.to_source(boxes)
    np.testing.assert_allclose(out[0], [20.0, 20.0, 60.0, 30.0])
    np.testing.assert_allclose(out[1], [0.0, 0.0, 100.0, 50.0])
    assert boxes[1, 0] == -5.0  # the input is not modified


def test_results_of_parallel_workers_are_delivered_in_frame_order() -> None:
    import queue

    from edgedet.pipeline.inference import InferenceBatch, PostWorker

    board = FrameBoard()
    slot = board.add("a")
    frames = []
    for seq in (1, 2, 3):
        slot.put(frame("a", seq, []))
        frames += board.take(1, timeout=0.1)  # three workers each took one frame
    delivered: List[int] = []
    post = PostWorker(
        queue.Queue(), lambda outputs, lbs: [()] * len(lbs), [lambda r: delivered.append(r.seq)], board=board
    )

    def finish(f: PreparedFrame) -> None:
        post.handle(InferenceBatch([f], {}, time.monotonic(), 1.0))

    finish(frames[2])  # frame 3 finished first: held back
    finish(frames[1])  # frame 2: still held, frame 1 is being inferred
    assert delivered == []
    finish(frames[0])
    assert delivered == [1, 2, 3]
    slot.put(frame("a", 4, []))
    finish(board.take(1, timeout=0.1)[0])
    assert delivered == [1, 2, 3, 4]
    assert board.done("a", 99) is None  # nothing is left registered as in flight (bounded memory)
