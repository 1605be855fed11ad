"""Static image datasets: digits (offline default), CIFAR-10/100 (python pickle batches), ImageNet."""

from __future__ import annotations

import math
import pickle
import random
import tarfile
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from .common import DatasetError, DatasetInfo

CIFAR_STATS = {  # the release's normalisation (docs/recipes.md)
    "cifar10": ((0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010)),
    "cifar100": ((0.5071, 0.4867, 0.4408), (0.2675, 0.2565, 0.2761)),
}
CIFAR_FILES = {
    "cifar10": ("cifar-10-batches-py", [f"data_batch_{i}" for i in range(1, 6)], ["test_batch"], "labels",
                "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz", "c58f30108f718f92721af3b95e74349a"),
    "cifar100": ("cifar-100-python", ["train"], ["test"], "fine_labels",
                 "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz", "eb9058c3a382ffc7106e4002c42a8d85"),
}
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


class Cutout:
    """Erase one random rectangle of a PIL image with one random value, with probability ``p``.

    The rectangle covers a uniform share in ``area`` of the image with an aspect ratio drawn uniformly
    in ``aspect``, and every channel of it gets the same value in 0..255 (the release's torchtoolbox
    Cutout with its defaults: p 0.5, area 2–40 %, aspect 0.4–2.5, one value per patch; docs/recipes.md).
    Uses Python's ``random``, which the trainer seeds.
    """

    def __init__(self, p: float = 0.5, area: tuple = (0.02, 0.4), aspect: tuple = (0.4, 2.5)):
        self.p, self.area, self.aspect = p, area, aspect

    def __call__(self, image: Image.Image) -> Image.Image:
        if random.random() >= self.p:
            return image
        width, height = image.size
        for _ in range(100):
            target = random.uniform(*self.area) * width * height
            ratio = random.uniform(*self.aspect)
            h, w = int(round(math.sqrt(target * ratio))), int(round(math.sqrt(target / ratio)))
            if 0 < h < height and 0 < w < width:
                top, left = random.randint(0, height - h), random.randint(0, width - w)
                pixels = np.array(image)
                pixels[top:top + h, left:left + w] = random.randint(0, 255)
                return Image.fromarray(pixels)
        return image

    def __repr__(self) -> str:
        return f"Cutout(p={self.p}, area={self.area}, aspect={self.aspect})"


class TensorImages(Dataset):
    """Images [N, C, H, W] (float) and labels [N] held in memory."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor):
        self.images, self.labels = images, labels

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int):
        return self.images[index], int(self.labels[index])


def stratified_split(labels: np.ndarray, split_seed: int,
                     test_fraction: float = 0.25) -> tuple[np.ndarray, np.ndarray, str]:
    """The digits' split of samples with ``labels`` [N]: (sorted train indices, sorted test indices, its name),
    class-stratified and seeded by ``split_seed``."""
    from sklearn.model_selection import train_test_split

    train_idx, test_idx = train_test_split(np.arange(len(labels)), test_size=test_fraction, random_state=split_seed,
                                           stratify=labels)
    return np.sort(train_idx), np.sort(test_idx), f"stratified-{test_fraction}-seed{split_seed}"


def digits(split_seed: int = 0, test_fraction: float = 0.25):
    """scikit-learn's handwritten digits (1797 images, 8×8, 10 classes; shipped with the package).

    A fixed, class-stratified split seeded by ``split_seed``; pixels scaled to [0, 1] and standardised
    with the training set's mean and std. Returns (train, test, info); samples are [1, 8, 8] float32.
    """
    from sklearn.datasets import load_digits

    bunch = load_digits()
    images = torch.tensor(bunch.images, dtype=torch.float32).unsqueeze(1) / 16.0
    labels = torch.tensor(bunch.target, dtype=torch.int64)
    train_idx, test_idx, split = stratified_split(bunch.target, split_seed, test_fraction)
    train_idx, test_idx = torch.tensor(train_idx), torch.tensor(test_idx)
    mean, std = images[train_idx].mean(), images[train_idx].std()
    images = (images - mean) / std
    info = DatasetInfo("digits", 10, 1, 8, False, split, len(train_idx), len(test_idx))
    return TensorImages(images[train_idx], labels[train_idx]), TensorImages(images[test_idx], labels[test_idx]), info


class BatchUnpickler(pickle.Unpickler):
    """Reads a CIFAR batch without running code: only the types a batch holds (dicts, lists, strings,
    numbers, bytes and numpy arrays) may be built; anything else is an UnpicklingError."""

    ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
        ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
        ("numpy.core.numeric", "_frombuffer"), ("numpy._core.numeric", "_frombuffer"),
        ("numpy", "ndarray"), ("numpy", "dtype"), ("_codecs", "encode"),
    }

    def find_class(self, module: str, name: str):
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"{module}.{name} is not allowed in a CIFAR batch")
        return super().find_class(module, name)


def read_batch(path: Path, label_key: str, classes: int, dataset: str) -> tuple[np.ndarray, list[int]]:
    """One CIFAR python batch: images [N, 3, 32, 32] uint8 and N labels in [0, classes). Raises
    DatasetError naming the file when it is unreadable, holds code, or has the wrong shape, dtype,
    labels or counts."""
    def bad(problem: str):
        return DatasetError(dataset, path, problem, "an unmodified python pickle batch of the official archive",
                            "the official archive")

    try:
        with open(path, "rb") as f:
            batch = BatchUnpickler(f, encoding="latin1").load()
    except (OSError, pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError) as err:
        raise bad(f"corrupt batch file ({type(err).__name__}: {str(err)[:80]})") from None
    if not isinstance(batch, dict) or "data" not in batch or label_key not in batch:
        raise bad(f"not a batch (a dict with 'data' and '{label_key}')")
    data, labels = batch["data"], batch[label_key]
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
        shape = getattr(data, "shape", None)
        raise bad(f"'data' must be a uint8 array [N, 3072]; it is {getattr(data, 'dtype', type(data).__name__)} "
                  f"{shape}")
    if not isinstance(labels, list) or len(labels) != len(data):
        raise bad(f"{len(labels) if isinstance(labels, list) else 'no'} labels for {len(data)} images")
    if not all(isinstance(y, int) and 0 <= y < classes for y in labels):
        raise bad(f"labels outside 0..{classes - 1}")
    return data.reshape(-1, 3, 32, 32), labels


class CifarPickle(Dataset):
    """CIFAR-10/100 from the python pickle batches (the official ``*-python.tar.gz`` layout)."""

    def __init__(self, folder: Path, files: list[str], label_key: str, transform, dataset: str):
        classes = 10 if dataset == "cifar10" else 100
        batches = [read_batch(folder / name, label_key, classes, dataset) for name in files]
        self.images = np.concatenate([images for images, _ in batches]).transpose(0, 2, 3, 1)  # [N, 32, 32, 3]
        self.labels = [label for _, labels in batches for label in labels]
        self.transform = transform

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int):
        return self.transform(Image.fromarray(self.images[index])), self.labels[index]


def _download_cifar(base: Path, name: str, url: str, md5: str) -> None:
    """Download and unpack the official archive into a temporary folder, then move the batch folder
    into place; a failure removes only the temporary folder, and nothing the user has is touched."""
    import shutil
    import tempfile

    from torchvision.datasets.utils import download_url

    folder_name = CIFAR_FILES[name][0]
    base.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".download-", dir=base))
    try:
        download_url(url, str(tmp), md5=md5)
        with tarfile.open(tmp / Path(url).name) as tar:
            tar.extractall(tmp, filter="data")
        (tmp / folder_name).rename(base / folder_name)
    except Exception as err:  # noqa: BLE001 - any failure means "not available here"
        raise DatasetError(name, base, f"not found and the download failed ({type(err).__name__})",
                           f"{folder_name}/ with the python batches", url) from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def cifar(name: str, root: Path, download: bool = True, augment: bool = True):
    """CIFAR-10 or CIFAR-100 under ``root/<name>/``. Train transform (the release's): random crop 32 pad 4,
    Cutout, horizontal flip, normalise; test: normalise. Returns (train, test, info)."""
    folder_name, train_files, test_files, label_key, url, md5 = CIFAR_FILES[name]
    base = root / name
    folder = base / folder_name
    missing = [f for f in train_files + test_files if not (folder / f).exists()]
    if missing:
        expected = f"{', '.join(train_files + test_files)} (the python version, about 170 MB unpacked)"
        if folder.exists():  # a partial folder is the user's: never replace it
            raise DatasetError(name, folder, f"incomplete ({', '.join(missing)} missing); move the folder away "
                               "to download again", expected, url)
        if not download:
            raise DatasetError(name, folder, "missing files", expected, url)
        _download_cifar(base, name, url, md5)
    from torchvision import transforms  # here, not at import: torchvision loads torch._dynamo (about 1 s)

    mean, std = CIFAR_STATS[name]
    normalise = [transforms.ToTensor(), transforms.Normalize(mean, std)]
    train_tf = []
    if augment:
        train_tf = [transforms.RandomCrop(32, padding=4), Cutout(), transforms.RandomHorizontalFlip()]
    train = CifarPickle(folder, train_files, label_key, transforms.Compose(train_tf + normalise), name)
    test = CifarPickle(folder, test_files, label_key, transforms.Compose(normalise), name)
    classes = 10 if name == "cifar10" else 100
    return train, test, DatasetInfo(name, classes, 3, 32, False, "official", len(train), len(test))


class CheckedImageFolder(Dataset):
    """A torchvision ImageFolder whose unreadable images raise a :class:`DatasetError` naming the file."""

    def __init__(self, folder: str, transform):
        from torchvision.datasets import ImageFolder

        self.images = ImageFolder(folder, transform=transform)
        self.classes, self.samples = self.images.classes, self.images.samples

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int):
        try:
            return self.images[index]
        except (OSError, ValueError) as err:
            raise DatasetError("imagenet", self.samples[index][0], f"unreadable image ({type(err).__name__})",
                               "a JPEG image", "the ImageNet (ILSVRC-2012) release") from None


def imagenet(root: Path):
    """ImageNet in ImageFolder layout under ``root/imagenet/{train,val}/<class>/*.JPEG``.

    Train: RandomResizedCrop 224 + horizontal flip; test: Resize 256 + CenterCrop 224; ImageNet mean/std.
    """
    from torchvision import transforms

    base = root / "imagenet"
    normalise = [transforms.ToTensor(), transforms.Normalize(IMAGENET_MEAN, IMAGENET_STD)]
    splits = {}
    for split in ("train", "val"):
        folder = base / split
        if not folder.is_dir() or not any(p.is_dir() for p in folder.iterdir()):
            raise DatasetError("imagenet", folder, "missing folder", "train/ and val/ with one folder of JPEGs per "
                               "class (ILSVRC-2012: about 150 GB; 1.28 M train, 50 k val images)",
                               "https://image-net.org (manual download, then the usual val re-foldering)")
        tf = [transforms.RandomResizedCrop(224), transforms.RandomHorizontalFlip()] if split == "train" else \
            [transforms.Resize(256), transforms.CenterCrop(224)]
        splits[split] = CheckedImageFolder(str(folder), transform=transforms.Compose(tf + normalise))
    train_classes, val_classes = splits["train"].classes, splits["val"].classes
    if train_classes != val_classes:  # ImageFolder numbers each split's own folders: labels would not match
        extra = sorted(set(val_classes) - set(train_classes)) or sorted(set(train_classes) - set(val_classes))
        where = "val/ has" if set(val_classes) - set(train_classes) else "train/ has"
        raise DatasetError("imagenet", base, f"class folders that differ between train/ and val/ ({where} "
                           f"{', '.join(extra[:3])}{', ...' if len(extra) > 3 else ''} that the other lacks)",
                           "the same class folders under train/ and val/",
                           "https://image-net.org (the usual val re-foldering puts each val image in its class folder)")
    classes = len(train_classes)
    return splits["train"], splits["val"], DatasetInfo("imagenet", classes, 3, 224, False, "official",
                                                       len(splits["train"]), len(splits["val"]))
