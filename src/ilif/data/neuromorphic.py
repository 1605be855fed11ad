"""Event datasets through spikingjelly 2.0.0: CIFAR10-DVS and DVS128 Gesture, as T-frame tensors.

Layout under the data root (spikingjelly's own):
    <name>/download/   the files as the dataset ships them (zips / tar.gz)
    <name>/extract/    the unpacked recordings (.aedat)
    <name>/events_np/  one .npz of events (t, x, y, p) per sample, built once
    <name>/frames_number_<T>_split_by_number/   T frames per sample with equal event counts, built once

We check what is there before asking spikingjelly for anything, so a missing or corrupt file ends
with one clear :class:`DatasetError`, and every build goes through a temporary folder (or spikingjelly's
``.building`` marker, which we clear with the half-built folder), so a failed run leaves nothing that
breaks the next one.
"""

from __future__ import annotations

import re
import tarfile
import zipfile
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from .common import DatasetError, DatasetInfo, remove_stale

CIFAR10_DVS_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
CIFAR10_DVS_SOURCE = "https://figshare.com/articles/dataset/CIFAR10-DVS_New/4724671 (10 zips, about 7 GB)"
GESTURE_SOURCE = "https://research.ibm.com/interactive/dvsgesture/ (DvsGesture.tar.gz, about 2.7 GB, manual download)"
PREPROCESS = ("clean", "reference")
SPLITS = ("reference", "random")


def _aedat_payload_ok(path: Path) -> bool:
    """CIFAR10-DVS .aedat: '#' header lines, then (address, timestamp) pairs of big-endian uint32."""
    data = path.read_bytes()
    offset = 0
    while data.startswith(b"#", offset):
        end = data.find(b"\n", offset)
        if end < 0:
            return False
        offset = end + 1
    return (len(data) - offset) % 8 == 0


def _build_events_np(base: Path, dataset: str, sj_class, expected: str, source: str, extract, check) -> Path:
    """Make ``base/events_np`` from ``extract/`` (or from ``download/`` first), atomically."""
    raw = base / "events_np"
    stale = raw.with_name("events_np.building")
    if stale.exists():  # a spikingjelly build died half-way: its output is unusable
        remove_stale(raw)
        remove_stale(stale)
    if raw.is_dir():
        return raw
    extract_root = base / "extract"
    if not extract_root.is_dir():
        download_root = base / "download"
        if not download_root.is_dir():
            raise DatasetError(dataset, base, "not found", expected, source)
        tmp = base / "extract.tmp"
        remove_stale(tmp)
        tmp.mkdir()
        try:
            extract(download_root, tmp)
        except BaseException:
            remove_stale(tmp)
            raise
        tmp.rename(extract_root)
    check(extract_root)
    tmp = base / "events_np.tmp"
    remove_stale(tmp)
    tmp.mkdir()
    try:
        sj_class.create_raw_from_extracted(extract_root, tmp)
    except BaseException as err:
        remove_stale(tmp)
        if isinstance(err, (ValueError, OSError)):
            raise DatasetError(dataset, extract_root, f"a recording could not be read ({err})", expected,
                               source) from None
        raise
    tmp.rename(raw)
    return raw


def _frames(base: Path, sj_class, T: int, **kwargs):
    """spikingjelly's frame dataset with T frames per sample (equal event counts), built once and cached."""
    frames_dir = base / f"frames_number_{T}_split_by_number"
    marker = frames_dir.with_name(frames_dir.name + ".building")
    if marker.exists():
        remove_stale(frames_dir)
        remove_stale(marker)
    try:
        return sj_class(str(base), data_type="frame", frames_number=T, split_by="number", **kwargs)
    except BaseException:
        if marker.exists():
            remove_stale(frames_dir)
            remove_stale(marker)
        raise


def resize_frames(frames: np.ndarray, size: int, preprocess: str) -> torch.Tensor:
    """Event frames [T, 2, H, W] (counts) -> float32 [T, 2, size, size].

    ``clean``: counts are kept as numbers and each polarity is area-averaged to size×size.
    ``reference``: the release's torchvision path — ToPILImage on float counts (×255 and a cast to
    uint8, which wraps around, so counts become near-binary maps), a 2-channel 'LA' PIL image resized
    bilinearly (PIL premultiplies by the second channel, mixing the polarities), ToTensor (/255).
    """
    x = torch.from_numpy(np.asarray(frames, dtype=np.float32))
    if preprocess == "clean":
        if x.shape[-1] == size and x.shape[-2] == size:
            return x
        return F.interpolate(x, size=(size, size), mode="area")
    from torchvision.transforms import functional as TF

    out = [TF.to_tensor(TF.resize(TF.to_pil_image(frame), [size, size])) for frame in x]
    return torch.stack(out)


def release_orientation(frames: np.ndarray) -> np.ndarray:
    """CIFAR10-DVS frames [T, 2, 128, 128] as spikingjelly 2.0.0 reads them (x = 127 − y_raw,
    y = 127 − x_raw) -> as the release's reader places events (x = 127 − x_raw, y = y_raw):
    out[..., a, b] = frames[..., b, 127 − a]. Polarity stays spikingjelly's."""
    return np.ascontiguousarray(np.flip(np.swapaxes(frames, -1, -2), -2))


class EventFrames(Dataset):
    """(frames [T, 2, size, size] float32, label) from a list of (npz path, label); ``orient`` is applied
    to the raw frames first (None: as read)."""

    def __init__(self, samples: list[tuple[str, int]], loader, size: int, preprocess: str, dataset: str,
                 orient=None):
        self.samples, self.loader, self.size, self.preprocess, self.dataset = samples, loader, size, preprocess, dataset
        self.orient = orient

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int):
        path, label = self.samples[index]
        try:
            frames = self.loader(path)
        except (OSError, ValueError, KeyError, zipfile.BadZipFile) as err:
            raise DatasetError(self.dataset, path, f"corrupt frame file ({type(err).__name__})",
                               "a spikingjelly frames .npz",
                               "a rebuild: delete the file's frames_number_* folder") from None
        if self.orient is not None:
            frames = self.orient(frames)
        return resize_frames(frames, self.size, self.preprocess), label


def _index_of(path: str) -> int:
    match = re.search(r"_(\d+)\.npz$", path)
    return int(match.group(1)) if match else -1


def split_cifar10_dvs(samples: list[tuple[str, int]], split: str, seed: int, train_fraction: float = 0.9):
    """Per class: ``reference`` puts the first 90 % by file index in train and the last 10 % in test
    (900/100 on the full set, the release's split); ``random`` draws a seeded 90/10 split per class."""
    if split not in SPLITS:
        raise ValueError(f"dataset.split={split!r} is not allowed: choose one of {SPLITS}")
    train, test = [], []
    generator = np.random.default_rng(seed)
    for label in sorted({lab for _, lab in samples}):
        files = sorted((s for s in samples if s[1] == label), key=lambda s: _index_of(s[0]))
        order = np.arange(len(files)) if split == "reference" else generator.permutation(len(files))
        cut = int(round(train_fraction * len(files)))
        train += [files[i] for i in sorted(order[:cut])]
        test += [files[i] for i in sorted(order[cut:])]
    return train, test


def _check_cifar10_dvs_extract(extract_root: Path) -> None:
    for cls in CIFAR10_DVS_CLASSES:
        folder = extract_root / cls
        if not folder.is_dir():
            raise DatasetError("cifar10_dvs", folder, "missing class folder", "one folder of .aedat files per class",
                               CIFAR10_DVS_SOURCE)
        for path in folder.iterdir():
            if not _aedat_payload_ok(path):
                raise DatasetError("cifar10_dvs", path, "truncated or corrupt recording",
                                   "an AEDAT file of 8-byte events", CIFAR10_DVS_SOURCE)


def _extract_cifar10_dvs(download_root: Path, out: Path) -> None:
    for cls in CIFAR10_DVS_CLASSES:
        archive = download_root / f"{cls}.zip"
        if not archive.exists():
            raise DatasetError("cifar10_dvs", archive, "missing archive",
                               "the 10 class zips (airplane.zip … truck.zip)", CIFAR10_DVS_SOURCE)
        try:
            with zipfile.ZipFile(archive) as zf:
                if zf.testzip() is not None:
                    raise zipfile.BadZipFile("bad CRC")
                zf.extractall(out)
        except zipfile.BadZipFile:
            raise DatasetError("cifar10_dvs", archive, "corrupt archive", "a valid zip of .aedat files",
                               CIFAR10_DVS_SOURCE) from None


def cifar10_dvs(root: Path, T: int = 10, split: str = "reference", preprocess: str = "clean", size: int = 48,
                split_seed: int = 0):
    """CIFAR10-DVS as [T, 2, size, size] frames (equal events per frame), 10 classes. Returns (train, test, info).
    ``preprocess="reference"`` also places the events as the release's reader does (:func:`release_orientation`)."""
    from spikingjelly.datasets.cifar10_dvs import CIFAR10DVS

    if preprocess not in PREPROCESS:
        raise ValueError(f"dataset.preprocess={preprocess!r} is not allowed: choose one of {PREPROCESS}")
    if split not in SPLITS:
        raise ValueError(f"dataset.split={split!r} is not allowed: choose one of {SPLITS}")
    base = root / "cifar10_dvs"
    _build_events_np(base, "cifar10_dvs", CIFAR10DVS,
                     "download/<class>.zip for the 10 classes (or extract/<class>/*.aedat)",
                     CIFAR10_DVS_SOURCE, _extract_cifar10_dvs, _check_cifar10_dvs_extract)
    folder = _frames(base, CIFAR10DVS, T)
    train, test = split_cifar10_dvs(folder.samples, split, split_seed)
    loader = folder.loader
    info = DatasetInfo("cifar10_dvs", 10, 2, size, True, split, len(train), len(test),
                       {"T": T, "preprocess": preprocess, "split_seed": split_seed if split == "random" else None})
    orient = release_orientation if preprocess == "reference" else None
    return (EventFrames(train, loader, size, preprocess, "cifar10_dvs", orient),
            EventFrames(test, loader, size, preprocess, "cifar10_dvs", orient), info)


def _check_gesture_extract(extract_root: Path) -> None:
    folder = extract_root / "DvsGesture"
    for name in ("trials_to_train.txt", "trials_to_test.txt"):
        if not (folder / name).exists():
            raise DatasetError("dvs_gesture", folder / name, "missing file", "DvsGesture/ with the trial lists, "
                               ".aedat recordings and _labels.csv files", GESTURE_SOURCE)
    for name in ("trials_to_train.txt", "trials_to_test.txt"):
        for trial in (folder / name).read_text().split():
            for needed in (folder / trial, folder / f"{Path(trial).stem}_labels.csv"):
                if not needed.exists():
                    raise DatasetError("dvs_gesture", needed, "missing file", f"every trial listed in {name}",
                                       GESTURE_SOURCE)


def _extract_gesture(download_root: Path, out: Path) -> None:
    archive = download_root / "DvsGesture.tar.gz"
    if not archive.exists():
        raise DatasetError("dvs_gesture", archive, "missing archive", "download/DvsGesture.tar.gz", GESTURE_SOURCE)
    try:
        with tarfile.open(archive) as tar:
            tar.extractall(out, filter="data")
    except (tarfile.TarError, EOFError, OSError):
        raise DatasetError("dvs_gesture", archive, "corrupt archive", "a valid DvsGesture.tar.gz",
                           GESTURE_SOURCE) from None


def dvs_gesture(root: Path, T: int = 20, preprocess: str = "clean"):
    """DVS128 Gesture as [T, 2, 128, 128] frames of raw counts, official trial split, 11 classes."""
    from spikingjelly.datasets.dvs128_gesture import DVS128Gesture

    if preprocess not in PREPROCESS:
        raise ValueError(f"dataset.preprocess={preprocess!r} is not allowed: choose one of {PREPROCESS}")
    base = root / "dvs_gesture"
    _build_events_np(base, "dvs_gesture", DVS128Gesture, "download/DvsGesture.tar.gz (or extract/DvsGesture/)",
                     GESTURE_SOURCE, _extract_gesture, _check_gesture_extract)
    train_folder = _frames(base, DVS128Gesture, T, train=True)
    test_folder = DVS128Gesture(str(base), train=False, data_type="frame", frames_number=T, split_by="number")
    # spikingjelly names the class folders 0..10 and DatasetFolder sorts them as strings ("10" before
    # "2"); relabel from the folder name so label k is gesture k + 1 of the dataset's documentation.
    train, test = ([(path, int(Path(path).parent.name)) for path, _ in folder.samples]
                   for folder in (train_folder, test_folder))
    info = DatasetInfo("dvs_gesture", 11, 2, 128, True, "official", len(train), len(test),
                       {"T": T, "preprocess": preprocess})
    return (EventFrames(train, train_folder.loader, 128, preprocess, "dvs_gesture"),
            EventFrames(test, test_folder.loader, 128, preprocess, "dvs_gesture"), info)
