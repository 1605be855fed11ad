import random
import zipfile

import numpy as np
import pytest
import torch
from PIL import Image

from data_fixtures import write_cifar, write_cifar10_dvs, write_gesture, write_imagenet
from ilif.data import Cutout, build, make_loader
from ilif.errors import DatasetError
from ilif.data.__main__ import main as data_cli
from ilif.data.neuromorphic import CIFAR10_DVS_CLASSES, cifar10_dvs, resize_frames, split_cifar10_dvs


def test_digits_split_is_fixed_and_standardised():
    train, test, info = build({"name": "digits"})
    assert (len(train), len(test)) == (1347, 450)
    assert (info.num_classes, info.in_channels, info.input_size, info.events) == (10, 1, 8, False)
    x, y = train[0]
    assert x.shape == (1, 8, 8) and x.dtype == torch.float32 and 0 <= y < 10
    assert abs(train.images.mean().item()) < 1e-5 and abs(train.images.std().item() - 1) < 1e-4
    again, _, _ = build({"name": "digits"})
    assert torch.equal(again.images, train.images)
    totals = torch.bincount(torch.cat([train.labels, test.labels]))
    assert ((torch.bincount(test.labels) - totals * 0.25).abs() <= 1).all()  # stratified


@pytest.mark.parametrize("name, classes", [("cifar10", 10), ("cifar100", 100)])
def test_cifar_from_pickle_batches(tmp_path, name, classes):
    write_cifar(tmp_path, name)
    train, test, info = build({"name": name, "root": str(tmp_path), "download": False})
    assert len(train) == classes * 3 * (5 if name == "cifar10" else 1) and len(test) == classes * 2
    assert info.num_classes == classes
    x, y = test[0]
    assert x.shape == (3, 32, 32) and x.dtype == torch.float32
    assert {test[i][1] for i in range(len(test))} == set(range(classes))
    raw = torch.tensor(test.images[0]).permute(2, 0, 1).float() / 255  # test transform: normalise only
    mean, std = ((0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010)) if name == "cifar10" else \
        ((0.5071, 0.4867, 0.4408), (0.2675, 0.2565, 0.2761))
    torch.testing.assert_close(x, (raw - torch.tensor(mean).view(3, 1, 1)) / torch.tensor(std).view(3, 1, 1))
    random.seed(0)
    torch.manual_seed(0)
    a = train[1][0]
    random.seed(0)
    torch.manual_seed(0)
    assert torch.equal(a, train[1][0])  # augmentation is deterministic under the seeds


def test_cifar_missing_and_corrupt(tmp_path):
    with pytest.raises(DatasetError, match=r"dataset 'cifar10': missing files at .*cifar-10-batches-py; expected "
                                           r"data_batch_1.*get it from https://www.cs.toronto.edu"):
        build({"name": "cifar10", "root": str(tmp_path), "download": False})
    write_cifar(tmp_path, "cifar10")
    (tmp_path / "cifar10" / "cifar-10-batches-py" / "data_batch_3").write_bytes(b"\x80\x04truncated")
    with pytest.raises(DatasetError, match=r"corrupt batch file .* at .*data_batch_3"):
        build({"name": "cifar10", "root": str(tmp_path), "download": False})


def test_cutout_erases_one_rectangle_with_one_colour():
    image = Image.fromarray(np.zeros((32, 32, 3), dtype=np.uint8))
    random.seed(3)
    out = np.array(Cutout(p=1.0)(image))
    changed = (out != 0).any(-1)
    rows, cols = np.nonzero(changed)
    box = changed[rows.min():rows.max() + 1, cols.min():cols.max() + 1]
    assert box.all() and 0.02 * 1024 * 0.5 <= box.size <= 0.4 * 1024 * 1.5
    assert len({tuple(out[r, c]) for r, c in zip(rows, cols)}) == 1
    assert len(set(out[rows[0], cols[0]].tolist())) == 1  # one value in every channel, as torchtoolbox's Cutout
    assert np.array_equal(np.array(Cutout(p=0.0)(image)), np.zeros((32, 32, 3)))


def test_cifar10_dvs_end_to_end(tmp_path):
    write_cifar10_dvs(tmp_path, per_class=10)
    cfg = {"name": "cifar10_dvs", "root": str(tmp_path), "T": 4}
    train, test, info = build(cfg)
    assert (len(train), len(test)) == (90, 10)  # first 9 of 10 per class train, the last one test
    assert all(path.endswith("_9.npz") for path, _ in test.samples)
    assert sorted(label for _, label in test.samples) == list(range(10))
    x, y = train[0]
    assert x.shape == (4, 2, 48, 48) and x.dtype == torch.float32 and y == 0
    raw = torch.from_numpy(train.loader(train.samples[0][0])).float()
    assert raw.shape == (4, 2, 128, 128) and raw.sum().item() == 400  # every event in one of the frames
    assert raw.flatten(1).sum(1).tolist() == [100.0] * 4  # equal event counts per frame
    torch.testing.assert_close(x, torch.nn.functional.adaptive_avg_pool2d(raw, 48))
    frames_dir = tmp_path / "cifar10_dvs" / "frames_number_4_split_by_number"
    assert frames_dir.is_dir() and not (tmp_path / "cifar10_dvs" / "events_np.building").exists()
    ref_train, _, ref_info = build({**cfg, "preprocess": "reference"})
    x_ref = ref_train[0][0]
    assert x_ref.shape == (4, 2, 48, 48) and x_ref.max() <= 1.0 and ref_info.details["preprocess"] == "reference"
    rand_train, rand_test, rand_info = build({**cfg, "split": "random", "split_seed": 1})
    assert (len(rand_train), len(rand_test), rand_info.split) == (90, 10, "random")
    again = build({**cfg, "split": "random", "split_seed": 1})[1]
    assert again.samples == rand_test.samples and rand_test.samples != test.samples


def test_reference_preprocess_places_events_as_the_release_reader(tmp_path):
    write_cifar10_dvs(tmp_path, per_class=1, n_events=40)
    train, _, _ = cifar10_dvs(tmp_path, T=2, preprocess="reference", size=128)
    path, _ = train.samples[0]
    cls = CIFAR10_DVS_CLASSES[0]
    with zipfile.ZipFile(tmp_path / "cifar10_dvs" / "download" / f"{cls}.zip") as zf:
        payload = zf.read(f"{cls}/cifar10_{cls}_0.aedat")
    pairs = np.frombuffer(payload[payload.index(b"file\r\n") + 6:], dtype=">u4").reshape(-1, 2)
    x_raw, y_raw = (pairs[:, 0] >> 1) & 0x7F, (pairs[:, 0] >> 8) & 0x7F
    release = np.zeros((128, 128), dtype=bool)
    release[y_raw, 127 - x_raw] = True  # the release's reader: x = 127 − x, y = y; frames are [y, x]
    frames = train[0][0]
    assert torch.equal(frames.sum((0, 1)) > 0, torch.from_numpy(release))
    assert path.endswith("_0.npz")


def test_split_reference_is_900_100_by_file_index():
    samples = [(f"/d/{c}/cifar10_{c}_{i}.npz", k) for k, c in enumerate(["a", "b"]) for i in reversed(range(1000))]
    train, test = split_cifar10_dvs(samples, "reference", seed=0)
    assert len(train) == 1800 and len(test) == 200
    assert {int(p.rsplit("_", 1)[1][:-4]) for p, _ in test} == set(range(900, 1000))
    with pytest.raises(ValueError, match="dataset.split='foo'"):
        split_cifar10_dvs(samples, "foo", seed=0)


def test_reference_preprocess_wraps_counts_like_the_release():
    frames = np.zeros((1, 2, 4, 4), dtype=np.float32)
    frames[0, 0] = 1.0  # 255 stays 255
    frames[0, 1] = 2.0  # 510 wraps to 254 in uint8
    out = resize_frames(frames, 4, "reference")
    assert out[0, 0, 0, 0].item() == 1.0
    assert out[0, 1, 0, 0].item() == pytest.approx(254 / 255)
    clean = resize_frames(frames, 2, "clean")
    assert clean[0, 1].tolist() == [[2.0, 2.0], [2.0, 2.0]]


def test_cifar10_dvs_missing_and_corrupt(tmp_path, capsys):
    assert data_cli(["cifar10_dvs", "--root", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "dataset 'cifar10_dvs': not found" in err[0] and "figshare" in err[0]
    download = write_cifar10_dvs(tmp_path, per_class=2)
    (download / "cat.zip").write_bytes(b"PK\x03\x04 broken")
    with pytest.raises(DatasetError, match=r"corrupt archive at .*cat.zip"):
        build({"name": "cifar10_dvs", "root": str(tmp_path), "T": 2})
    assert sorted(p.name for p in (tmp_path / "cifar10_dvs").iterdir()) == ["download"]  # nothing half-built


def test_truncated_recording_is_named(tmp_path):
    write_cifar10_dvs(tmp_path, per_class=2)
    build({"name": "cifar10_dvs", "root": str(tmp_path), "T": 2})  # builds extract/ and events_np/
    base = tmp_path / "cifar10_dvs"
    for folder in ("events_np", "frames_number_2_split_by_number"):
        import shutil
        shutil.rmtree(base / folder)
    bad = base / "extract" / "dog" / "cifar10_dog_1.aedat"
    bad.write_bytes(bad.read_bytes()[:-3])
    with pytest.raises(DatasetError, match=r"truncated or corrupt recording at .*cifar10_dog_1.aedat"):
        build({"name": "cifar10_dvs", "root": str(tmp_path), "T": 2})
    assert not (base / "events_np").exists() and not (base / "events_np.tmp").exists()


def test_stale_spikingjelly_markers_are_cleared(tmp_path):
    write_cifar10_dvs(tmp_path, per_class=2)
    base = tmp_path / "cifar10_dvs"
    (base / "events_np").mkdir()
    (base / "events_np.building").touch()  # what a killed spikingjelly build leaves behind
    (base / "frames_number_2_split_by_number.building").touch()
    train, test, _ = build({"name": "cifar10_dvs", "root": str(tmp_path), "T": 2})
    assert len(train) + len(test) == 20
    assert not list(base.glob("*.building"))


def test_dvs_gesture_end_to_end(tmp_path):
    write_gesture(tmp_path)
    train, test, info = build({"name": "dvs_gesture", "root": str(tmp_path), "T": 5})
    assert (len(train), len(test), info.num_classes) == (22, 11, 11)
    assert sorted(label for _, label in test.samples) == list(range(11))
    for path, label in test.samples:
        assert f"/{label}/" in path
    x, y = test[0]
    assert x.shape == (5, 2, 128, 128) and x.dtype == torch.float32
    assert x.sum().item() == 60 and x.min() >= 0  # raw counts of the gesture's 60 events


def test_dvs_gesture_missing(tmp_path):
    with pytest.raises(DatasetError, match=r"dataset 'dvs_gesture': not found .*DvsGesture.tar.gz.*manual download"):
        build({"name": "dvs_gesture", "root": str(tmp_path), "T": 5})


def test_imagenet_folder(tmp_path):
    write_imagenet(tmp_path)
    train, val, info = build({"name": "imagenet", "root": str(tmp_path)})
    assert (len(train), len(val), info.num_classes) == (6, 6, 2)
    x, y = val[4]
    assert x.shape == (3, 224, 224) and y == 1
    bad = tmp_path / "imagenet" / "val" / "n01443537" / "n01443537_0.JPEG"
    bad.write_bytes(b"\xff\xd8 not a jpeg")
    index = [i for i, (p, _) in enumerate(val.samples) if p == str(bad)][0]
    with pytest.raises(DatasetError, match=r"unreadable image .* at .*n01443537_0.JPEG"):
        val[index]


def test_imagenet_missing(tmp_path):
    with pytest.raises(DatasetError, match=r"dataset 'imagenet': missing folder at .*imagenet/train"):
        build({"name": "imagenet", "root": str(tmp_path)})


def test_unknown_dataset_and_env_root(tmp_path, monkeypatch):
    with pytest.raises(ValueError, match="dataset='mnist' is not allowed"):
        build({"name": "mnist"})
    write_cifar(tmp_path, "cifar100")
    monkeypatch.setenv("ILIF_DATA", str(tmp_path))
    assert len(build({"name": "cifar100", "download": False})[1]) == 200


def test_loader_is_seeded():
    train, _, _ = build({"name": "digits"})
    first = [y.tolist() for _, y in make_loader(train, 64, train=True, seed=5)][:3]
    again = [y.tolist() for _, y in make_loader(train, 64, train=True, seed=5)][:3]
    other = [y.tolist() for _, y in make_loader(train, 64, train=True, seed=6)][:3]
    assert first == again and first != other


def test_a_dataset_from_outside_the_package_through_target(train_run):
    train, test, info = build({"name": "tiny", "_target_": "data_fixtures.tiny_dataset"})
    assert (len(train), len(test), info.name) == (40, 20, "tiny")
    with pytest.raises(ValueError, match="dataset._target_='nowhere.fn' is not allowed: it must name an importable"):
        build({"name": "tiny", "_target_": "nowhere.fn"})
    run_dir, summary = train_run("dataset.name=tiny", "dataset._target_=data_fixtures.tiny_dataset",
                                 "trainer.epochs=1", "trainer.progress=false")
    assert summary.dataset_info["test_size"] == 20 and run_dir.name.startswith("tiny-ilif-")
