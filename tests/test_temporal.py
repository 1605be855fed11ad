"""The temporal mini tasks: seqdigits (one row per time step) and ndigits (saccade events)."""

from dataclasses import replace

import numpy as np
import pytest
import torch

from ilif.data import build
from ilif.data.static import digits
from ilif.data.temporal import SaccadeSpec, integrate, ndigits, place, row_frames, saccade_events, seqdigits

QUIET = SaccadeSpec(noise=0.0)  # the dataset's generator without background events


def test_seqdigits_shows_row_t_at_step_t_with_the_split_and_standardisation_of_digits():
    train, test, info = seqdigits()
    plain_train, plain_test, plain_info = digits()
    assert (info.name, info.events, info.in_channels, info.input_size, info.num_classes) == (
        "seqdigits", True, 1, 8, 10)
    assert (len(train), len(test), info.split) == (len(plain_train), len(plain_test), plain_info.split)
    for index in (0, 7, len(test) - 1):
        frames, label = test[index]
        image, plain_label = plain_test[index]
        assert frames.shape == (8, 1, 8, 8) and label == plain_label
        for t in range(8):
            assert torch.equal(frames[t, 0, t], image[0, t])
            others = torch.cat([frames[t, 0, :t], frames[t, 0, t + 1:]])
            assert torch.count_nonzero(others) == 0
    assert torch.equal(train[3][0].sum(0), plain_train[3][0])  # the rows add up to the image


def test_seqdigits_refuses_a_T_that_is_not_its_rows():
    with pytest.raises(ValueError, match=r"^trainer.T=6 is not allowed with dataset=seqdigits: .*\(T=8\)$"):
        seqdigits(T=6)
    assert row_frames(torch.ones(2, 1, 8, 8)).sum().item() == 2 * 64


def _reference_events(images: np.ndarray, spec: SaccadeSpec) -> list[list[tuple[int, int, int, int]]]:
    """The DVS rule written plainly, pixel by pixel (noise off): per image, (step, x, y, polarity)."""
    log = lambda a: np.log(a + spec.log_eps)  # noqa: E731
    positions = spec.path()
    out = []
    for image in images:
        frames = [log(place(image[None], x, y, spec.canvas)[0]) for x, y in positions]
        events = []
        for y in range(spec.canvas):
            for x in range(spec.canvas):
                reference, last = frames[0][y, x], None
                for step in range(1, len(frames)):
                    if last is not None and step - last <= spec.refractory:
                        continue
                    change = frames[step][y, x] - reference
                    if abs(change) >= spec.threshold:
                        polarity = 1 if change > 0 else 0
                        reference += spec.threshold if polarity else -spec.threshold
                        events.append((step, x, y, polarity))
                        last = step
        out.append(sorted(events))
    return out


def _as_tuples(events: dict, spec: SaccadeSpec) -> list[tuple[int, int, int, int]]:
    steps = events["t"] // spec.step_us + 1
    return sorted(zip(steps.tolist(), events["x"].tolist(), events["y"].tolist(), events["p"].tolist()))


def _bars() -> np.ndarray:
    """Hand-made 16×16 images: a horizontal bar, a vertical bar, a blank image."""
    horizontal, vertical = np.zeros((16, 16)), np.zeros((16, 16))
    horizontal[7:9, 2:14] = 1.0
    vertical[2:14, 7:9] = 1.0
    return np.stack([horizontal, vertical, np.zeros((16, 16))])


def test_saccade_events_follow_the_dvs_rule_exactly():
    images = _bars()
    events = saccade_events(images, QUIET)
    assert [_as_tuples(e, QUIET) for e in events] == _reference_events(images, QUIET)
    counts = [len(e["t"]) for e in events]
    assert counts[2] == 0 and counts[0] > 100 and counts[1] > 100  # a blank image is silent
    for e in events[:2]:
        assert np.all(np.diff(e["t"]) >= 0) and e["t"].dtype == np.int64
        assert set(np.unique(e["p"]).tolist()) == {0, 1}


def test_saccade_timing_each_saccade_moves_what_its_direction_says():
    """The third saccade moves the camera along x only (y stays 0), so a horizontal bar changes only in
    its own two rows there; the first two move in y too, and its long edges fire in the rows around it.
    (A pixel emits one event per step at most, so with a low threshold its events can trail the motion
    by a few steps; a threshold of 1 and no refractory period make one event enough per edge.)"""
    prompt = replace(QUIET, threshold=1.0, refractory=0)
    horizontal, vertical, _ = saccade_events(_bars(), prompt)
    saccade = prompt.steps * prompt.step_us  # each saccade's duration in µs
    assert horizontal["t"].max() < 3 * saccade and vertical["t"].min() >= 0
    third = horizontal["t"] // saccade == 2
    assert third.any() and set(horizontal["y"][third].tolist()) == {7, 8}  # the bar's rows, y offset 0
    for k in (0, 1):
        assert set(horizontal["y"][horizontal["t"] // saccade == k].tolist()) - {7, 8}
    assert np.bincount(vertical["t"] // saccade, minlength=3)[2] > 0


def test_polarity_balances_on_the_closed_saccade_path():
    """The path returns to its start, so every edge that brightened a pixel darkens it again: ON and
    OFF events balance to within 10 % over the image."""
    images = _bars()[:2]
    for events in saccade_events(images, QUIET):
        on = np.zeros((QUIET.canvas, QUIET.canvas), int)
        off = np.zeros_like(on)
        np.add.at(on, (events["y"][events["p"] == 1], events["x"][events["p"] == 1]), 1)
        np.add.at(off, (events["y"][events["p"] == 0], events["x"][events["p"] == 0]), 1)
        assert abs(int(on.sum()) - int(off.sum())) <= 0.1 * (on.sum() + off.sum())


def test_refractory_period_and_seeded_noise():
    images = _bars()[:1]
    slow = replace(QUIET, refractory=3)
    (events,) = saccade_events(images, slow)
    for x, y in {(int(a), int(b)) for a, b in zip(events["x"], events["y"])}:
        steps = np.sort(events["t"][(events["x"] == x) & (events["y"] == y)] // slow.step_us)
        assert np.all(np.diff(steps) > slow.refractory)
    blank = np.zeros((1, 16, 16))
    noisy = replace(QUIET, noise=0.01)
    (first,), (again,), (other,) = (saccade_events(blank, s) for s in (noisy, noisy, replace(noisy, seed=1)))
    expected = 0.01 * noisy.canvas ** 2 * 3 * noisy.steps
    assert 0.7 * expected < len(first["t"]) < 1.3 * expected
    assert all(np.array_equal(first[k], again[k]) for k in "txyp") and not np.array_equal(first["x"], other["x"])


def test_ndigits_frames_are_the_dvs_integration_of_its_events(tmp_path):
    train, test, info = ndigits(tmp_path, T=6)
    assert (info.name, info.events, info.in_channels, info.input_size, len(train), len(test)) == (
        "ndigits", True, 2, 20, 1347, 450)
    folder = next((tmp_path / "ndigits").glob("events_np-*"))
    files = sorted(folder.glob("*/*.npz"), key=lambda p: int(p.stem))
    assert len(files) == 1797 and not list((tmp_path / "ndigits").glob(".building-*"))
    from sklearn.model_selection import train_test_split
    from spikingjelly.datasets.utils import integrate_events_by_fixed_frames_number

    labels = np.array([int(p.parent.name) for p in files])
    _, test_idx = train_test_split(np.arange(1797), test_size=0.25, random_state=0, stratify=labels)
    index = int(np.sort(test_idx)[5])
    events = dict(np.load(files[index]))
    frames, label = test[5]
    assert label == labels[index] and frames.shape == (6, 2, 20, 20)
    sj = integrate_events_by_fixed_frames_number(events, "number", 6, 20, 20)
    assert torch.equal(frames, torch.from_numpy(sj.astype(np.float32)))
    assert torch.equal(integrate(events, 6, 20), frames)
    assert frames.sum().item() == len(events["t"])
    again = ndigits(tmp_path, T=6)[1][5][0]  # read back, not generated twice
    assert torch.equal(again, frames) and len(list((tmp_path / "ndigits").iterdir())) == 1


def test_both_temporal_tasks_build_through_the_dataset_entry_point(tmp_path):
    train, _, info = build({"name": "seqdigits", "T": 8})
    assert info.name == "seqdigits" and train[0][0].shape == (8, 1, 8, 8)
    for name, channels in (("seqdigits", 1), ("ndigits", 2)):
        train, _, info = build({"name": name, "T": 4, "stand_in": True, "root": str(tmp_path)})
        assert (info.events, info.in_channels, train[0][0].shape[:2]) == (True, channels, (4, channels))
    assert not (tmp_path / "ndigits").exists()  # a stand-in generates nothing


def test_a_run_on_seqdigits_needs_one_step_per_row():
    from ilif.conf import compose_config
    from ilif.errors import ConfigError
    from ilif.train.config import validate

    validate(compose_config(["recipe=mini_seqdigits"]))
    with pytest.raises(ConfigError) as err:
        validate(compose_config(["dataset=seqdigits", "trainer.T=6"]))
    assert str(err.value) == ("trainer.T=6 is not allowed: 8 with dataset=seqdigits (one time step per row of the "
                              "8×8 digits; recipe=mini_seqdigits sets it)")
    validate(compose_config(["dataset=seqdigits", "trainer.T=6", "dataset.stand_in=true"]))  # stand-ins take any T
