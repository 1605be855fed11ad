"""Tiny datasets written in each dataset's real on-disk format, for end-to-end loader tests."""

from __future__ import annotations

import io
import pickle
import struct
import tarfile
import zipfile
from pathlib import Path

import numpy as np
from PIL import Image

CIFAR10_DVS_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")


def write_cifar(root: Path, name: str, per_class_train: int = 3, per_class_test: int = 2, seed: int = 0) -> None:
    """The python-pickle batches of CIFAR-10 (5 train batches) or CIFAR-100 (one 'train' file)."""
    rng = np.random.default_rng(seed)
    classes = 10 if name == "cifar10" else 100
    folder = root / name / ("cifar-10-batches-py" if name == "cifar10" else "cifar-100-python")
    folder.mkdir(parents=True)
    key = "labels" if name == "cifar10" else "fine_labels"

    def batch(per_class):
        labels = [c for c in range(classes) for _ in range(per_class)]
        data = rng.integers(0, 256, size=(len(labels), 3072), dtype=np.uint8)
        return {"data": data, key: labels, "filenames": [f"img{i}.png" for i in range(len(labels))]}

    if name == "cifar10":
        for i in range(1, 6):
            (folder / f"data_batch_{i}").write_bytes(pickle.dumps(batch(per_class_train)))
        (folder / "test_batch").write_bytes(pickle.dumps(batch(per_class_test)))
    else:
        (folder / "train").write_bytes(pickle.dumps(batch(per_class_train)))
        (folder / "test").write_bytes(pickle.dumps(batch(per_class_test)))


def cifar10_dvs_aedat(n_events: int, rng) -> bytes:
    """An AEDAT 2 recording as CIFAR10-DVS ships it: '#' header, big-endian (address, timestamp) pairs,
    address bits: x in 1..7, y in 8..14, polarity in bit 0."""
    x = rng.integers(0, 128, n_events)
    y = rng.integers(0, 128, n_events)
    p = rng.integers(0, 2, n_events)
    t = np.sort(rng.integers(0, 1_000_000, n_events))
    addr = (y << 8) | (x << 1) | p
    pairs = np.stack([addr, t], 1).astype(">u4")
    return b"#!AER-DAT2.0\r\n# This is a raw AE data file\r\n" + pairs.tobytes()


def write_cifar10_dvs(root: Path, per_class: int = 10, n_events: int = 400, seed: int = 0) -> Path:
    """download/<class>.zip, each holding <class>/cifar10_<class>_<i>.aedat."""
    rng = np.random.default_rng(seed)
    download = root / "cifar10_dvs" / "download"
    download.mkdir(parents=True)
    for cls in CIFAR10_DVS_CLASSES:
        with zipfile.ZipFile(download / f"{cls}.zip", "w") as zf:
            for i in range(per_class):
                zf.writestr(f"{cls}/cifar10_{cls}_{i}.aedat", cifar10_dvs_aedat(n_events, rng))
    return download


def gesture_aedat3(t, x, y, p) -> bytes:
    """An AEDAT 3.1 file: text header, then one polarity-event packet (28-byte header, 8-byte events)."""
    header = b"#!AER-DAT3.1\r\n#Format: RAW\r\n#!END-HEADER\r\n"
    data = (x.astype(np.uint32) << 17) | (y.astype(np.uint32) << 2) | (p.astype(np.uint32) << 1) | 1
    events = np.stack([data, t.astype(np.uint32)], 1).astype("<u4").tobytes()
    n = len(t)
    packet = struct.pack("<HHIIIIII", 1, 1, 8, 4, 0, n, n, n)
    return header + packet + events


def write_gesture(root: Path, train_users=(1, 2), test_users=(3,), seed: int = 0) -> Path:
    """download/DvsGesture.tar.gz with DvsGesture/userNN_led.aedat, _labels.csv and the trial lists.
    Every recording holds all 11 gestures, 100 ms each."""
    rng = np.random.default_rng(seed)
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        def add(name: str, payload: bytes) -> None:
            info = tarfile.TarInfo(f"DvsGesture/{name}")
            info.size = len(payload)
            tar.addfile(info, io.BytesIO(payload))

        for users, listing in ((train_users, "trials_to_train.txt"), (test_users, "trials_to_test.txt")):
            names = []
            for user in users:
                stem = f"user{user:02d}_led"
                n = 11 * 60
                t = np.repeat(np.arange(11) * 100_000, 60) + rng.integers(0, 100_000, n)
                t = np.sort(t)
                add(f"{stem}.aedat", gesture_aedat3(t, rng.integers(0, 128, n), rng.integers(0, 128, n),
                                                    rng.integers(0, 2, n)))
                rows = "".join(f"{c + 1},{c * 100_000},{(c + 1) * 100_000}\n" for c in range(11))
                add(f"{stem}_labels.csv", ("class,startTime_usec,endTime_usec\n" + rows).encode())
                names.append(f"{stem}.aedat")
            add(listing, ("\n".join(names) + "\n").encode())
    download = root / "dvs_gesture" / "download"
    download.mkdir(parents=True)
    (download / "DvsGesture.tar.gz").write_bytes(buffer.getvalue())
    return download


def write_imagenet(root: Path, classes=("n01440764", "n01443537"), per_class: int = 3, size=(40, 30)) -> Path:
    """imagenet/{train,val}/<wnid>/*.JPEG."""
    rng = np.random.default_rng(0)
    base = root / "imagenet"
    for split in ("train", "val"):
        for wnid in classes:
            folder = base / split / wnid
            folder.mkdir(parents=True)
            for i in range(per_class):
                pixels = rng.integers(0, 256, size=(size[1], size[0], 3), dtype=np.uint8)
                Image.fromarray(pixels).save(folder / f"{wnid}_{i}.JPEG", format="JPEG")
    return base


def tiny_dataset(name: str):
    """A dataset from outside the package for the ``dataset._target_`` tests: 40 train / 20 test digits."""
    import torch.utils.data as tud

    from ilif.data import build
    from ilif.data.common import DatasetInfo

    train, test, info = build({"name": "digits"})
    return (tud.Subset(train, range(40)), tud.Subset(test, range(20)),
            DatasetInfo(name, 10, 1, 8, False, "first-40-20", 40, 20, {}))


def killed_once_dataset(name: str):
    """:func:`tiny_dataset`, except that the first worker process (of a study) to build it is killed
    with SIGKILL, as the out-of-memory killer does; the file named by $ILIF_TEST_KILL_FLAG records that
    it happened."""
    import multiprocessing
    import os
    import signal

    flag = os.environ["ILIF_TEST_KILL_FLAG"]
    if multiprocessing.parent_process() is None:  # the study's own data check
        return tiny_dataset(name)
    try:
        os.close(os.open(flag, os.O_CREAT | os.O_EXCL))
    except FileExistsError:
        return tiny_dataset(name)
    os.kill(os.getpid(), signal.SIGKILL)


def killed_in_job_dataset(name: str, split_seed: int):
    """:func:`tiny_dataset`, except that a submitit job with ``dataset.split_seed=1`` is killed with
    SIGKILL as it builds it (as the out-of-memory killer does): a failed job that leaves no note."""
    import os
    import signal

    if os.environ.get("SUBMITIT_EXECUTOR") and split_seed == 1:
        os.kill(os.getpid(), signal.SIGKILL)
    return tiny_dataset(name)


def not_a_dataset(name: str):
    """A dataset function of one's own that returns the wrong thing."""
    return "data"


def not_a_neuron(**kwargs):
    """A neuron "class" of one's own that makes nothing."""
    return None


def not_a_backbone(neuron, num_classes: int, in_channels: int, T: int):
    """A backbone of one's own that returns no model."""
    return {"layers": []}


def crashing_dataset(name: str, split_seed: int):
    """:func:`tiny_dataset`, except that ``dataset.split_seed=1`` ends in an error nobody foresaw when it
    is built a second time (in its job: the sweep's check of the datasets built it first), the flag file
    ``$ILIF_TEST_KILL_FLAG`` telling the two apart."""
    import os
    from pathlib import Path

    flag = Path(os.environ["ILIF_TEST_KILL_FLAG"])
    if split_seed == 1:
        if flag.exists():
            raise ZeroDivisionError("a bug in a dataset of one's own")
        flag.touch()
    return tiny_dataset(name)
