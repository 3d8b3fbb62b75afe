"""A training's curves for TensorBoard, written from its progress log."""

from __future__ import annotations

import json
import struct

from tensorboardX.proto.event_pb2 import Event

from reward_designer.tblog import write_events


def read_scalars(logdir) -> dict[str, list[tuple[int, float]]]:
    """Every scalar in the event files of ``logdir`` (TFRecord: length, its CRC, the event, its CRC)."""
    scalars: dict[str, list[tuple[int, float]]] = {}
    for path in sorted(logdir.glob("events.out.tfevents.*")):
        data, at = path.read_bytes(), 0
        while at < len(data):
            (length,) = struct.unpack("<Q", data[at:at + 8])
            event = Event.FromString(data[at + 12:at + 12 + length])
            at += 12 + length + 4
            for value in event.summary.value:
                scalars.setdefault(value.tag, []).append((event.step, value.simple_value))
    return scalars


def test_the_progress_log_becomes_scalars_at_their_steps_once_however_often_it_is_written(tmp_path):
    log = tmp_path / "progress.jsonl"
    rows = [{"global_step": 512, "fitness": 1.5, "component/speed": 0.25, "pg_loss": -0.1},
            {"global_step": 1024, "fitness": 2.5, "component/speed": 0.5, "pg_loss": -0.2}]
    log.write_text("\n".join(json.dumps(r) for r in rows) + "\n" + '{"global_step": "x", "fitness": 9}\n'
                   + "not json\n")
    assert write_events(log, tmp_path / "tb") == 6
    assert write_events(log, tmp_path / "tb") == 6  # again: the old events are replaced, not doubled
    scalars = read_scalars(tmp_path / "tb")
    assert scalars["fitness"] == [(512, 1.5), (1024, 2.5)]
    assert scalars["component/speed"] == [(512, 0.25), (1024, 0.5)]
    assert [round(v, 3) for _, v in scalars["pg_loss"]] == [-0.1, -0.2]
