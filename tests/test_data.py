"""Data loading: real on-disk formats round-trip exactly, real Fashion-MNIST splits, clear errors for missing data.

The CIFAR/SVHN fixtures write tiny files in the formats torchvision's own dataset classes read:
  * CIFAR-10/100: pickles read with ``pickle.load(f, encoding="latin1")``; the real files are Python 2 pickles whose
    keys therefore come back as *str* ("data", "labels" / "fine_labels", "label_names" / "fine_label_names"), not
    bytes; "data" is uint8 (N, 3072), each row R(1024) G(1024) B(1024), each plane row-major 32x32.
  * SVHN: ``<root>/{train,test}_32x32.mat`` (no sub-folder) with X (32, 32, 3, N) uint8 = (H, W, C, N) and y (N, 1),
    label 10 meaning digit 0 (torchvision maps it to 0).
torchvision checks the md5 sum of each file against the real files' sums (CIFAR: data batches in the constructor,
meta in _load_meta; SVHN: only the split being opened), so the tests replace those expected sums with the sums of
the files they wrote; everything else (reading, reshaping, label mapping) is torchvision's real code.
"""
from __future__ import annotations

import gzip
import hashlib
import pickle
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import torchvision.datasets as tvd

from acs_core.config import ConfigError, RunConfig
from acs_core.data import (DATASETS, DataMissingError, Split, augment_batch, load_data, read_idx, sample_per_class,
                           stratified_indices)

DEBIAN_FASHION = Path("/usr/share/datasets/fashion-mnist")


def _md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def _all_rows(bundle) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """train + val of a bundle, as (x, y, index into the source training set)."""
    return (torch.cat([bundle.train.x, bundle.val.x]), torch.cat([bundle.train.y, bundle.val.y]),
            torch.cat([bundle.train.index, bundle.val.index]))


def _check_round_trip(bundle, x_train: np.ndarray, y_train: np.ndarray, x_test: np.ndarray, y_test: np.ndarray) -> None:
    """Every loaded row equals the source row its `index` names; train+val cover the training set exactly once."""
    x, y, idx = _all_rows(bundle)
    assert sorted(idx.tolist()) == list(range(len(y_train)))
    assert x.dtype == torch.uint8 and y.dtype == torch.int64
    assert torch.equal(x, torch.from_numpy(x_train)[idx])
    assert torch.equal(y, torch.from_numpy(y_train)[idx])
    assert torch.equal(bundle.test.x, torch.from_numpy(x_test)[bundle.test.index])
    assert torch.equal(bundle.test.y, torch.from_numpy(y_test)[bundle.test.index])
    assert sorted(bundle.test.index.tolist()) == list(range(len(y_test)))


def _pixel(bundle, split: str, source_row: int) -> torch.Tensor:
    """The loaded image of source row `source_row` of the training ("train"/"val") or test set."""
    if split == "test":
        s = bundle.test
    else:
        s = bundle.train if source_row in bundle.train.index.tolist() else bundle.val
    (pos,) = torch.nonzero(s.index == source_row).flatten().tolist()
    return s.x[pos]


# ---------------------------------------------------------------- CIFAR-10 / CIFAR-100


def _cifar_images(rng: np.random.Generator, n: int) -> np.ndarray:
    """(n, 3, 32, 32) uint8 CHW images."""
    return rng.integers(0, 256, (n, 3, 32, 32), dtype=np.uint8)


def _write_pickle(path: Path, obj: dict) -> None:
    with open(path, "wb") as fh:
        pickle.dump(obj, fh, protocol=2)


@pytest.fixture
def cifar10_dir(tmp_path, monkeypatch):
    """cifar-10-batches-py/ with 5 training batches of 8 images, a test batch of 12, batches.meta; md5s patched."""
    rng = np.random.default_rng(0)
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    xs, ys = [], []
    train_list = []
    for b in range(1, 6):
        x = _cifar_images(rng, 8)
        y = [int(v) for v in rng.permutation(np.arange(8) + b) % 10]
        _write_pickle(folder / f"data_batch_{b}", {"batch_label": f"training batch {b} of 5", "labels": y,
                                                    "data": x.reshape(8, 3072), "filenames": [f"img{b}_{i}.png" for i in range(8)]})
        xs.append(x)
        ys.extend(y)
        train_list.append([f"data_batch_{b}", _md5(folder / f"data_batch_{b}")])
    x_test = _cifar_images(rng, 12)
    y_test = [i % 10 for i in range(12)]
    # a known pixel: test image 3, channel 2 (blue), row 5, column 7
    x_test[3] = 0
    x_test[3, 2, 5, 7] = 201
    _write_pickle(folder / "test_batch", {"batch_label": "testing batch 1 of 1", "labels": y_test,
                                          "data": x_test.reshape(12, 3072), "filenames": [f"t{i}.png" for i in range(12)]})
    names = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
    _write_pickle(folder / "batches.meta", {"num_cases_per_batch": 8, "label_names": names, "num_vis": 3072})
    monkeypatch.setattr(tvd.CIFAR10, "train_list", train_list)
    monkeypatch.setattr(tvd.CIFAR10, "test_list", [["test_batch", _md5(folder / "test_batch")]])
    monkeypatch.setattr(tvd.CIFAR10, "meta", {**tvd.CIFAR10.meta, "md5": _md5(folder / "batches.meta")})
    x_train = np.concatenate(xs)
    return tmp_path, x_train, np.array(ys, dtype=np.int64), x_test, np.array(y_test, dtype=np.int64)


def test_cifar10_round_trips_pixels_and_labels(cifar10_dir):
    root, x_train, y_train, x_test, y_test = cifar10_dir
    bundle = load_data(RunConfig(dataset="cifar10", data_dir=str(root), val_size=10))
    assert bundle.train.x.shape == (30, 3, 32, 32) and len(bundle.val) == 10
    assert bundle.test.x.shape == (12, 3, 32, 32)
    assert bundle.train.x.is_contiguous()
    _check_round_trip(bundle, x_train, y_train, x_test, y_test)
    img = _pixel(bundle, "test", 3)
    assert img[2, 5, 7] == 201 and int(img.sum()) == 201  # same channel, row and column; nothing else set
    # a training pixel from the middle of batch 3, checked against the raw row-major CHW offset in the file
    row = 2 * 8 + 5
    flat = x_train[row].reshape(3072)
    assert int(_pixel(bundle, "train", row)[1, 31, 0]) == int(flat[1 * 1024 + 31 * 32 + 0])


def test_cifar10_test_size_is_stratified(cifar10_dir):
    root, *_ = cifar10_dir
    bundle = load_data(RunConfig(dataset="cifar10", data_dir=str(root), val_size=10, test_size=10))
    assert sorted(bundle.test.y.tolist()) == list(range(10))  # one per class of the 12 (classes 0, 1 twice)


def test_cifar10_integrity_check_is_real(cifar10_dir, monkeypatch):
    """With torchvision's real md5 sums our fake files count as corrupted: the check runs and we report it."""
    root, *_ = cifar10_dir
    monkeypatch.undo()
    with pytest.raises(DataMissingError, match="corrupted"):
        load_data(RunConfig(dataset="cifar10", data_dir=str(root), val_size=10))


@pytest.fixture
def cifar100_dir(tmp_path, monkeypatch):
    rng = np.random.default_rng(1)
    folder = tmp_path / "cifar-100-python"
    folder.mkdir()
    x_train, x_test = _cifar_images(rng, 300), _cifar_images(rng, 100)
    y_train, y_test = np.arange(300) % 100, rng.permutation(100)
    x_train[123] = 0
    x_train[123, 0, 31, 2] = 77  # red, last row, third column
    for name, x, y in (("train", x_train, y_train), ("test", x_test, y_test)):
        _write_pickle(folder / name, {"filenames": [f"{i}.png" for i in range(len(y))], "batch_label": name,
                                      "fine_labels": [int(v) for v in y], "coarse_labels": [int(v) // 5 for v in y],
                                      "data": x.reshape(len(y), 3072)})
    _write_pickle(folder / "meta", {"fine_label_names": [f"c{i}" for i in range(100)],
                                    "coarse_label_names": [f"s{i}" for i in range(20)]})
    monkeypatch.setattr(tvd.CIFAR100, "train_list", [["train", _md5(folder / "train")]])
    monkeypatch.setattr(tvd.CIFAR100, "test_list", [["test", _md5(folder / "test")]])
    monkeypatch.setattr(tvd.CIFAR100, "meta", {**tvd.CIFAR100.meta, "md5": _md5(folder / "meta")})
    return tmp_path, x_train, y_train.astype(np.int64), x_test, y_test.astype(np.int64)


def test_cifar100_round_trips_fine_labels(cifar100_dir):
    root, x_train, y_train, x_test, y_test = cifar100_dir
    bundle = load_data(RunConfig(dataset="cifar100", data_dir=str(root), val_size=100, train_size=100))
    assert bundle.spec.num_classes == 100
    assert bundle.train.x.shape == (100, 3, 32, 32) and bundle.val.x.shape == (100, 3, 32, 32)
    assert sorted(bundle.val.y.tolist()) == list(range(100)) and sorted(bundle.train.y.tolist()) == list(range(100))
    assert set(bundle.train.index.tolist()).isdisjoint(bundle.val.index.tolist())
    for s in (bundle.train, bundle.val):
        assert torch.equal(s.x, torch.from_numpy(x_train)[s.index])
        assert torch.equal(s.y, torch.from_numpy(y_train)[s.index])
    assert torch.equal(bundle.test.x, torch.from_numpy(x_test)) and torch.equal(bundle.test.y, torch.from_numpy(y_test))
    full = load_data(RunConfig(dataset="cifar100", data_dir=str(root), val_size=100))
    img = _pixel(full, "train", 123)
    assert img[0, 31, 2] == 77 and int(img.sum()) == 77


# ---------------------------------------------------------------- SVHN


@pytest.fixture
def svhn_dir(tmp_path, monkeypatch):
    """train_32x32.mat / test_32x32.mat in SVHN's layout: X (H, W, C, N) uint8, y (N, 1) with 10 for digit 0."""
    sio = pytest.importorskip("scipy.io")
    rng = np.random.default_rng(2)
    out = {}
    split_list = dict(tvd.SVHN.split_list)
    for split, n in (("train", 40), ("test", 20)):
        x = rng.integers(0, 256, (n, 3, 32, 32), dtype=np.uint8)  # what we expect back: N, C, H, W
        digits = np.arange(n) % 10
        if split == "train":
            x[4] = 0
            x[4, 1, 3, 30] = 99  # green, row 3, column 30 (asymmetric, so an H/W swap shows)
        X = np.ascontiguousarray(x.transpose(2, 3, 1, 0))  # -> (32, 32, 3, N)
        y = np.where(digits == 0, 10, digits).astype(np.uint8)[:, None]
        path = tmp_path / f"{split}_32x32.mat"
        sio.savemat(path, {"X": X, "y": y})
        split_list[split] = [split_list[split][0], path.name, _md5(path)]
        out[split] = (x, digits.astype(np.int64))
    monkeypatch.setattr(tvd.SVHN, "split_list", split_list)
    return tmp_path, *out["train"], *out["test"]


def test_svhn_round_trips_and_maps_label_10_to_0(svhn_dir):
    root, x_train, y_train, x_test, y_test = svhn_dir
    bundle = load_data(RunConfig(dataset="svhn", data_dir=str(root), val_size=10))
    assert bundle.train.x.shape == (30, 3, 32, 32) and bundle.test.x.shape == (20, 3, 32, 32)
    assert set(torch.cat([bundle.train.y, bundle.val.y, bundle.test.y]).tolist()) == set(range(10))
    _check_round_trip(bundle, x_train, y_train, x_test, y_test)
    img = _pixel(bundle, "train", 4)
    assert img[1, 3, 30] == 99 and int(img.sum()) == 99


# ---------------------------------------------------------------- Fashion-MNIST in torchvision's layout


def _idx_bytes(a: np.ndarray) -> bytes:
    return bytes([0, 0, 0x08, a.ndim]) + b"".join(struct.pack(">I", d) for d in a.shape) + a.astype(np.uint8).tobytes()


@pytest.mark.parametrize("gz", [True, False])
def test_fashion_mnist_torchvision_layout(tmp_path, gz):
    rng = np.random.default_rng(3)
    raw = tmp_path / "FashionMNIST" / "raw"
    raw.mkdir(parents=True)
    data = {"train": (rng.integers(0, 256, (50, 28, 28), dtype=np.uint8), np.arange(50) % 10),
            "t10k": (rng.integers(0, 256, (20, 28, 28), dtype=np.uint8), (np.arange(20) * 3) % 10)}
    data["train"][0][7] = 0
    data["train"][0][7, 2, 25] = 250  # row 2, column 25
    for prefix, (x, y) in data.items():
        for kind, arr in (("images-idx3", x), ("labels-idx1", y)):
            blob = _idx_bytes(arr)
            name = raw / f"{prefix}-{kind}-ubyte"
            if gz:
                name.with_name(name.name + ".gz").write_bytes(gzip.compress(blob))
            else:
                name.write_bytes(blob)
    if gz:
        assert np.array_equal(read_idx(raw / "train-images-idx3-ubyte.gz"), data["train"][0])
    bundle = load_data(RunConfig(dataset="fashion_mnist", data_dir=str(tmp_path), val_size=10))
    assert bundle.train.x.shape == (40, 1, 28, 28) and bundle.test.x.shape == (20, 1, 28, 28)
    (xtr, ytr), (xte, yte) = data["train"], data["t10k"]
    _check_round_trip(bundle, xtr[:, None], ytr.astype(np.int64), xte[:, None], yte.astype(np.int64))
    img = _pixel(bundle, "train", 7)
    assert img[0, 2, 25] == 250 and int(img.sum()) == 250


def test_read_idx_rejects_other_types(tmp_path):
    p = tmp_path / "f"
    p.write_bytes(bytes([0, 0, 0x0D, 1]) + struct.pack(">I", 1) + b"\0\0\0\0")  # float IDX
    with pytest.raises(ValueError, match="unsigned-byte"):
        read_idx(p)


# ---------------------------------------------------------------- real Fashion-MNIST (Debian's dataset-fashion-mnist)

needs_debian = pytest.mark.skipif(not DEBIAN_FASHION.is_dir(), reason="dataset-fashion-mnist is not installed")


@pytest.fixture(scope="module")
def fashion_full() -> tuple[Split, Split]:
    return DATASETS.get("fashion_mnist").load(None, False)


@needs_debian
def test_real_fashion_mnist_sizes_and_balance(fashion_full):
    train, test = fashion_full
    assert train.x.shape == (60000, 1, 28, 28) and test.x.shape == (10000, 1, 28, 28)
    assert train.x.dtype == torch.uint8 and train.y.dtype == torch.int64
    assert torch.bincount(train.y).tolist() == [6000] * 10
    assert torch.bincount(test.y).tolist() == [1000] * 10
    assert int(train.x.max()) == 255 and int(train.x.min()) == 0


@needs_debian
def test_real_fashion_mnist_subsets(fashion_full):
    train, test = fashion_full
    cfg = RunConfig(dataset="fashion_mnist", train_size=1000, val_size=500, test_size=2000, data_seed=0)
    a = load_data(cfg)
    assert torch.bincount(a.train.y, minlength=10).tolist() == [100] * 10
    assert torch.bincount(a.val.y, minlength=10).tolist() == [50] * 10
    assert torch.bincount(a.test.y, minlength=10).tolist() == [200] * 10
    assert set(a.train.index.tolist()).isdisjoint(a.val.index.tolist())
    assert len(set(a.train.index.tolist())) == 1000
    assert torch.equal(a.train.x, train.x[a.train.index]) and torch.equal(a.val.y, train.y[a.val.index])
    assert torch.equal(a.test.x, test.x[a.test.index])
    b = load_data(cfg)
    assert all(torch.equal(getattr(a, s).index, getattr(b, s).index) for s in ("train", "val", "test"))
    c = load_data(RunConfig(dataset="fashion_mnist", train_size=1000, val_size=500, test_size=2000, data_seed=1))
    assert not torch.equal(a.train.index, c.train.index) and not torch.equal(a.val.index, c.val.index)
    assert torch.bincount(c.train.y, minlength=10).tolist() == [100] * 10


# ---------------------------------------------------------------- missing data


@pytest.mark.parametrize("name, how", [("fashion_mnist", "apt-get install dataset-fashion-mnist"),
                                       ("cifar10", "download=true"), ("cifar100", "download=true"), ("svhn", "download=true")])
def test_missing_data_names_set_folder_and_remedy(tmp_path, name, how):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DataMissingError) as info:
        load_data(RunConfig(dataset=name, data_dir=str(empty)))
    msg = str(info.value)
    assert "\n" not in msg
    assert name in msg and str(empty) in msg and how in msg
    assert isinstance(info.value, FileNotFoundError)


def test_cli_missing_data_exits_2_with_one_line(tmp_path):
    empty, out = tmp_path / "empty", tmp_path / "x"
    empty.mkdir()
    proc = subprocess.run([sys.executable, "-m", "acs_core", "train", "dataset=cifar10", f"data_dir={empty}", f"out={out}"],
                          capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("acs: error:"), proc.stderr
    assert "cifar10" in lines[0] and str(empty) in lines[0]
    assert not out.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty"]


# ---------------------------------------------------------------- augmentation and stratified sampling


def _windows(x: torch.Tensor, pad: int) -> list[torch.Tensor]:
    padded = torch.nn.functional.pad(x, (pad, pad, pad, pad))
    h, w = x.shape[-2:]
    return [padded[..., i:i + h, j:j + w] for i in range(2 * pad + 1) for j in range(2 * pad + 1)]


@pytest.mark.parametrize("kind", ["crop", "crop_flip"])
def test_augment_batch_crops_and_flips(kind):
    torch.manual_seed(0)
    x = torch.rand(32, 3, 12, 12)
    out = augment_batch(x, kind, pad=2)
    assert out.shape == x.shape and out.dtype == x.dtype
    assert out.min() >= 0 and out.max() <= 1
    assert not torch.equal(out, x)
    flipped = 0
    for k in range(len(x)):
        plain = any(torch.equal(out[k], win) for win in _windows(x[k], 2))
        mirror = any(torch.equal(out[k].flip(-1), win) for win in _windows(x[k], 2))
        assert plain or (kind == "crop_flip" and mirror)
        flipped += not plain
    assert (flipped > 0) == (kind == "crop_flip")


def test_augment_none_is_identity():
    x = torch.rand(4, 1, 8, 8)
    assert torch.equal(augment_batch(x, "none"), x)


def test_stratified_indices_size_and_shares():
    g = torch.Generator().manual_seed(0)
    y = torch.cat([torch.full((n,), c) for c, n in enumerate([500, 300, 150, 50])])[torch.randperm(1000, generator=g)]
    for size in (1, 7, 10, 99, 100, 333, 999, 1000):
        idx = stratified_indices(y, size, torch.Generator().manual_seed(size))
        assert len(idx) == size and len(set(idx.tolist())) == size
        assert torch.equal(idx, torch.sort(idx).values)
        counts = torch.bincount(y[idx], minlength=4).double()
        exact = torch.tensor([500, 300, 150, 50]).double() * size / 1000
        assert ((counts - exact).abs() < 1).all()
    assert torch.bincount(y[stratified_indices(y, 100, g)]).tolist() == [50, 30, 15, 5]
    # largest remainders: exact shares 2.8, 0.8, 0.4 of 4 -> 3, 1, 0
    y2 = torch.tensor([0] * 7 + [1] * 2 + [2])
    assert torch.bincount(y2[stratified_indices(y2, 4, g)], minlength=3).tolist() == [3, 1, 0]


def test_sample_per_class_budgets():
    y = torch.tensor([0, 1, 2] * 10)
    idx = sample_per_class(y, {0: 3, 2: 5}, torch.Generator().manual_seed(0))
    assert torch.bincount(y[idx], minlength=3).tolist() == [3, 0, 5]


# ---------------------------------------------------------------- synthetic


def test_synthetic_loads_and_is_learnable():
    b = load_data(RunConfig(dataset="synthetic", train_size=500, val_size=200, test_size=100))
    assert b.train.x.shape == (500, 1, 16, 16) and b.val.x.shape == (200, 1, 16, 16) and b.test.x.shape == (100, 1, 16, 16)
    assert b.train.x.dtype == torch.uint8 and b.train.y.dtype == torch.int64
    assert b.spec.shape == (1, 16, 16) and b.spec.num_classes == 10
    assert torch.bincount(b.train.y).tolist() == [50] * 10
    xb, yb = b.train.batch(torch.arange(8), torch.device("cpu"))
    assert xb.dtype == torch.float32 and 0 <= xb.min() and xb.max() <= 1 and torch.equal(yb, b.train.y[:8])
    # nearest class mean classifies the test set almost perfectly: the classes are learnable
    xtr, xte = b.train.x.float().flatten(1), b.test.x.float().flatten(1)
    means = torch.stack([xtr[b.train.y == c].mean(0) for c in range(10)])
    pred = torch.cdist(xte, means).argmin(1)
    assert (pred == b.test.y).float().mean() > 0.9


def test_size_errors_are_config_errors():
    with pytest.raises(ConfigError, match="val_size"):
        load_data(RunConfig(dataset="synthetic", val_size=2000))
    with pytest.raises(ConfigError, match="train_size"):
        load_data(RunConfig(dataset="synthetic", val_size=1000, train_size=1001))
