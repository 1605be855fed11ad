"""Two mini tasks made from scikit-learn's digits in which time carries the signal.

``seqdigits``: the digits shown one row per time step (frame t holds row t of the standardised image,
the rest zero), so a class can only be read by remembering earlier rows.

``ndigits``: an event dataset made the way N-MNIST was recorded from MNIST (Orchard et al., Frontiers
in Neuroscience 9:437, 2015: a DVS camera moved in three saccades in front of each image). Each digit
is upsampled, moved along a triangle of three saccades, and a simulated DVS pixel emits an ON (OFF)
event whenever its log intensity has risen (fallen) by the contrast threshold since its last event,
with a refractory period and a little seeded background noise. The events are written once per sample
(t, x, y, p), as spikingjelly's ``events_np`` folders hold them, and integrated into [T, 2, H, W]
frames by spikingjelly's equal-event-count integration, the code path of CIFAR10-DVS and DVS128
Gesture. docs/ndigits.md describes the generator.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import socket
import tempfile
import zipfile
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from .common import DatasetError, DatasetInfo
from .static import TensorImages, digits, stratified_split

ROWS = 8  # the digits are 8×8: seqdigits has one frame per row
DIGITS = 1797  # scikit-learn's digits: the samples of ndigits
GENERATOR_VERSION = 1  # raise it when the generator's code changes what it makes (a new events folder)


def row_frames(images: torch.Tensor) -> torch.Tensor:
    """Images [N, 1, 8, 8] -> frames [N, 8, 1, 8, 8]: frame t holds row t of the image, the rest zero."""
    mask = torch.eye(ROWS, dtype=images.dtype).reshape(ROWS, 1, ROWS, 1)  # [t, 1, row, 1]
    return images.unsqueeze(1) * mask


def seqdigits(T: int = ROWS, split_seed: int = 0):
    """The digits one row per time step: (train, test, info) with samples [8, 1, 8, 8] float32; the
    split and the standardisation are those of :func:`ilif.data.static.digits`."""
    if T != ROWS:
        raise ValueError(f"trainer.T={T} is not allowed with dataset=seqdigits: the digits have {ROWS} rows, "
                         f"one per time step (T={ROWS})")
    train, test, info = digits(split_seed=split_seed)
    sets = [TensorImages(row_frames(part.images), part.labels) for part in (train, test)]
    return sets[0], sets[1], DatasetInfo("seqdigits", 10, 1, ROWS, True, info.split, info.train_size, info.test_size,
                                         {"T": T, "rows_per_step": 1})


@dataclass(frozen=True)
class SaccadeSpec:
    """The ndigits generator's parameters (the defaults are the dataset; a change makes another one).

    The digit (8×8, intensities scaled to [0, 1]) is upsampled bilinearly by ``upsample`` and placed
    in a square canvas of ``canvas`` pixels; its top-left corner moves along the triangle (0, 0) ->
    ``apex`` = (a_x, a_y) -> (2·a_x, 0) -> (0, 0) in (x, y) pixels, one saccade per side, each of
    ``steps`` rendering steps of ``step_us`` microseconds. A pixel's log intensity is
    log(intensity + ``log_eps``); ``threshold`` is the contrast threshold, ``refractory`` the steps a
    pixel's contrast events pause after one, ``noise`` the chance per pixel and step of a background
    event of random polarity (background events ignore the refractory period).
    """

    upsample: int = 2
    canvas: int = 20
    apex: tuple[float, float] = (2.0, 4.0)
    steps: int = 12
    step_us: int = 8000
    log_eps: float = 0.2
    threshold: float = 0.4
    refractory: int = 1
    noise: float = 0.0005
    seed: int = 0

    def path(self) -> list[tuple[float, float]]:
        """The corner's position (x, y) at each rendering step 0..3·steps (both ends included)."""
        ax, ay = self.apex
        corners = [(0.0, 0.0), (ax, ay), (2 * ax, 0.0), (0.0, 0.0)]
        points = [corners[0]]
        for (x0, y0), (x1, y1) in zip(corners, corners[1:]):
            points += [(x0 + (x1 - x0) * k / self.steps, y0 + (y1 - y0) * k / self.steps)
                       for k in range(1, self.steps + 1)]
        return points

    def digest(self) -> str:
        """Eight hex digits of the parameters and :data:`GENERATOR_VERSION`: the events' folder name."""
        text = json.dumps({"version": GENERATOR_VERSION, **asdict(self)}, sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:8]


def place(images: np.ndarray, x: float, y: float, canvas: int) -> np.ndarray:
    """Images [N, h, w] drawn into [N, canvas, canvas] with their top-left corner at (x, y) ≥ 0,
    bilinearly for fractional positions (the four integer placements, weighted)."""
    n, h, w = images.shape
    out = np.zeros((n, canvas, canvas), dtype=np.float64)
    x0, y0 = int(np.floor(x)), int(np.floor(y))
    fx, fy = x - x0, y - y0
    for dy, wy in ((0, 1 - fy), (1, fy)):
        for dx, wx in ((0, 1 - fx), (1, fx)):
            if wx * wy > 0:
                out[:, y0 + dy:y0 + dy + h, x0 + dx:x0 + dx + w] += wx * wy * images
    return out


def saccade_events(images: np.ndarray, spec: SaccadeSpec) -> list[dict[str, np.ndarray]]:
    """DVS events of images [N, h, w] (intensities in [0, 1]) moved along ``spec``'s saccades.

    Returns one dict per image with arrays ``t`` (µs, int64, sorted), ``x``, ``y`` (int32) and ``p``
    (1 ON, 0 OFF). Each pixel keeps the log intensity of its last event as its reference; at each
    step a pixel out of its refractory period whose log intensity differs from the reference by at
    least ``threshold`` emits one event of that sign and moves its reference by ``threshold``. Event
    times are spread uniformly inside their step; all randomness comes from ``spec.seed``.
    """
    rng = np.random.default_rng(spec.seed)
    n, h, w = images.shape
    ax, ay = spec.apex
    if ax < 0 or ay < 0 or 2 * ax + w > spec.canvas or ay + h > spec.canvas:
        raise ValueError(f"ndigits: a {w}×{h} image moved by apex={spec.apex} does not fit a {spec.canvas}-pixel "
                         "canvas (the apex must be ≥ 0 and leave the image inside)")
    positions = spec.path()
    log = lambda frame: np.log(frame + spec.log_eps)  # noqa: E731
    reference = log(place(images, *positions[0], spec.canvas))
    last_event = np.full(reference.shape, -10 ** 9)
    found: list[tuple[np.ndarray, ...]] = []
    for step, (x, y) in enumerate(positions[1:], start=1):
        level = log(place(images, x, y, spec.canvas))
        ready = step - last_event > spec.refractory
        on = ready & (level - reference >= spec.threshold)
        off = ready & (reference - level >= spec.threshold)
        reference = reference + spec.threshold * (on.astype(np.float64) - off)
        noise = rng.random(reference.shape) < spec.noise
        noise_on = noise & (rng.random(reference.shape) < 0.5)
        fired_on, fired_off = on | (noise_on & ~off), off | (noise & ~noise_on & ~on)
        last_event[fired_on | fired_off] = step
        for polarity, fired in ((1, fired_on), (0, fired_off)):
            sample, row, col = np.nonzero(fired)
            found.append((sample, col, row, np.full(len(sample), polarity), np.full(len(sample), step)))
    sample, xs, ys, ps, steps = (np.concatenate(parts) for parts in zip(*found))
    times = ((steps - 1) * spec.step_us + rng.integers(0, spec.step_us, len(steps))).astype(np.int64)
    events = []
    for index in range(n):
        mine = np.flatnonzero(sample == index)
        order = mine[np.argsort(times[mine], kind="stable")]
        events.append({"t": times[order], "x": xs[order].astype(np.int32), "y": ys[order].astype(np.int32),
                       "p": ps[order].astype(np.int8)})
    return events


def upsampled_digits(upsample: int) -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's digits as intensities in [0, 1], upsampled bilinearly: ([N, 8u, 8u], labels [N])."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    images = torch.tensor(bunch.images, dtype=torch.float64).unsqueeze(1) / 16.0
    big = F.interpolate(images, scale_factor=upsample, mode="bilinear", align_corners=False)
    return big.squeeze(1).clamp(0, 1).numpy(), bunch.target


def events_folder(root: Path, spec: SaccadeSpec) -> Path:
    """``root/ndigits/events_np-<spec digest>``: one ``<label>/<index>.npz`` of events per digit, made on
    first use in a temporary folder and moved into place whole (a process that loses the race to
    another one keeps the other's). Raises DatasetError naming the folder when it lacks files."""
    folder = root / "ndigits" / f"events_np-{spec.digest()}"
    if not folder.is_dir():
        _generate(folder, spec)
    count = sum(1 for _ in folder.glob("*/*.npz"))
    if count != DIGITS:
        raise DatasetError("ndigits", folder, f"{count} of {DIGITS} event files", "one .npz per digit",
                           "a rebuild: delete the folder and it is generated again")
    return folder


BUILDING = ".building-"


def remove_abandoned(parent: Path) -> None:
    """Delete the ``.building-<pid>@<host>-*`` folders in ``parent`` that a generator on this host left
    when it was killed (its process is gone); those of live processes and of other hosts are kept."""
    host = socket.gethostname()
    for stale in parent.glob(f"{BUILDING}*"):
        pid, _, where = stale.name[len(BUILDING):].rpartition("-")[0].partition("@")
        if where == host and pid.isdigit() and not _alive(int(pid)):
            shutil.rmtree(stale, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def _generate(folder: Path, spec: SaccadeSpec) -> None:
    images, labels = upsampled_digits(spec.upsample)
    folder.parent.mkdir(parents=True, exist_ok=True)
    remove_abandoned(folder.parent)
    tmp = Path(tempfile.mkdtemp(prefix=f"{BUILDING}{os.getpid()}@{socket.gethostname()}-", dir=folder.parent))
    try:
        umask = os.umask(0)
        os.umask(umask)
        tmp.chmod(0o777 & ~umask)  # mkdtemp makes it private; the data root may be shared
        for index, events in enumerate(saccade_events(images, spec)):
            (tmp / str(labels[index])).mkdir(exist_ok=True)
            np.savez(tmp / str(labels[index]) / f"{index}.npz", **events)
        (tmp / "spec.json").write_text(
            json.dumps({"version": GENERATOR_VERSION, **asdict(spec)}, sort_keys=True) + "\n")
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    try:
        tmp.rename(folder)
    except OSError:  # another process put its folder there first: keep that one
        shutil.rmtree(tmp, ignore_errors=True)
        if not folder.is_dir():
            raise


def _load_events(path: Path) -> dict[str, np.ndarray]:
    try:
        if not path.is_file():  # a FIFO would be waited on forever
            raise ValueError("not a regular file")
        with np.load(path) as data:
            return {key: data[key] for key in ("t", "x", "y", "p")}
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as err:
        raise DatasetError("ndigits", path, f"corrupt event file ({type(err).__name__})", "an .npz of t, x, y, p",
                           "a rebuild: delete its events_np-* folder") from None


def integrate(events: dict[str, np.ndarray], T: int, size: int) -> torch.Tensor:
    """Events -> [T, 2, size, size] float32 counts: T frames of equal event counts, as spikingjelly
    integrates CIFAR10-DVS and DVS128 Gesture (``split_by='number'``)."""
    from spikingjelly.datasets.utils import integrate_events_by_fixed_frames_number

    return torch.from_numpy(integrate_events_by_fixed_frames_number(events, "number", T, size, size).astype(np.float32))


def ndigits(root: Path, T: int = 6, split_seed: int = 0):
    """The saccade-event digits (the events of SaccadeSpec()) as [T, 2, canvas, canvas] frames, with the
    split of :func:`ilif.data.static.digits`. Returns (train, test, info)."""
    spec = SaccadeSpec()
    folder = events_folder(root, spec)
    files = sorted(folder.glob("*/*.npz"), key=lambda p: int(p.stem))
    labels = np.array([int(p.parent.name) for p in files])
    frames = torch.stack([integrate(_load_events(p), T, spec.canvas) for p in files])
    train_idx, test_idx, split = stratified_split(labels, split_seed)
    targets = torch.tensor(labels, dtype=torch.int64)
    info = DatasetInfo("ndigits", 10, 2, spec.canvas, True, split, len(train_idx), len(test_idx),
                       {"T": T, "generator": asdict(spec)})
    return (TensorImages(frames[train_idx], targets[train_idx]), TensorImages(frames[test_idx], targets[test_idx]),
            info)
