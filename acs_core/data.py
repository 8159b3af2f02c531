"""Data sets -> train / validation / test splits of uint8 images (scaled to [0,1] per batch), offline first."""
from __future__ import annotations

import gzip
import os
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from .config import ConfigError, RunConfig
from .registry import Registry


class DataMissingError(FileNotFoundError):
    """The data set's files are not where we looked; the message says where and how to get them."""


@dataclass
class Split:
    """Images as uint8 (N, C, H, W) and labels as int64 (N,); `index` maps back to the source data set."""

    x: torch.Tensor
    y: torch.Tensor
    index: torch.Tensor = field(default=None)  # type: ignore[assignment]

    def __post_init__(self) -> None:
        if self.index is None:
            self.index = torch.arange(len(self.y))

    def __len__(self) -> int:
        return len(self.y)

    def to(self, device: torch.device) -> "Split":
        """The same split with images and labels on `device` (so training batches need no host-to-device copy)."""
        return Split(self.x.to(device), self.y.to(device), self.index)

    def subset(self, idx: torch.Tensor) -> "Split":
        return Split(self.x[idx], self.y[idx], self.index[idx])

    def batch(self, idx: torch.Tensor, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """Float images in [0,1] and labels for the given rows, on `device`."""
        idx = idx.to(self.x.device)
        x = self.x[idx].to(device, non_blocking=True).float().div_(255.0)
        return x, self.y[idx].to(device, non_blocking=True)


@dataclass
class DataSpec:
    """What a data set is: how to load it, its shape, normalisation and attack conventions."""

    load: Callable[[Path | None, bool], tuple[Split, Split]]
    num_classes: int
    shape: tuple[int, int, int]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    eps_linf: float
    eps_l2: float
    augment: str  # "none" | "crop" | "crop_flip"
    eps_perceptual: float = 0.5  # the self perceptual bound of PAT (Fast-LPA) and the perceptual attacks
    configure: Callable[["DataSpec", RunConfig], "DataSpec"] | None = None  # facts that depend on the config (imagefolder)


@dataclass
class DataBundle:
    """The three splits a run uses plus the facts models and attacks need."""

    name: str
    spec: DataSpec
    train: Split
    val: Split
    test: Split


DATASETS: Registry[DataSpec] = Registry("dataset")


def sample_per_class(y: torch.Tensor, budgets: dict[int, int], generator: torch.Generator) -> torch.Tensor:
    """budgets[c] random members of each class c of `y`, drawn with `generator`; sorted indices."""
    chosen = [torch.empty(0, dtype=torch.long)]
    for c, k in budgets.items():
        members = torch.nonzero(y == c).flatten()
        chosen.append(members[torch.randperm(len(members), generator=generator)[:k]])
    return torch.sort(torch.cat(chosen)).values


def stratified_indices(y: torch.Tensor, size: int, generator: torch.Generator) -> torch.Tensor:
    """`size` indices with class shares as in `y` (largest remainders), drawn with `generator`, sorted."""
    classes, counts = torch.unique(y, return_counts=True)
    exact = counts.double() * size / len(y)
    take = exact.floor().long()
    order = torch.argsort(exact - take.double(), descending=True, stable=True)
    take[order[: size - int(take.sum())]] += 1
    return sample_per_class(y, dict(zip(classes.tolist(), take.tolist())), generator)


def load_data(cfg: RunConfig) -> DataBundle:
    """Load cfg.dataset, take the stratified training subset, split off validation, subsample the test set."""
    spec = DATASETS.get(cfg.dataset)
    if spec.configure is not None:
        spec = spec.configure(spec, cfg)
    root = Path(cfg.data_dir).expanduser() if cfg.data_dir else None
    train, test = spec.load(root, cfg.download)
    g = torch.Generator().manual_seed(cfg.data_seed)
    if cfg.val_size >= len(train):
        raise ConfigError(f"val_size: {cfg.val_size} >= the {len(train)} training samples; use a smaller val_size")
    val_idx = stratified_indices(train.y, cfg.val_size, g) if cfg.val_size else torch.empty(0, dtype=torch.long)
    rest = torch.ones(len(train), dtype=torch.bool)
    rest[val_idx] = False
    val, pool = train.subset(val_idx), train.subset(torch.nonzero(rest).flatten())
    if cfg.train_size:
        if cfg.train_size > len(pool):
            raise ConfigError(f"train_size: {cfg.train_size} > the {len(pool)} samples left after validation; use 0 for all")
        pool = pool.subset(stratified_indices(pool.y, cfg.train_size, g))
    if cfg.test_size and cfg.test_size < len(test):
        test = test.subset(stratified_indices(test.y, cfg.test_size, g))
    return DataBundle(cfg.dataset, spec, pool, val, test)


def augment_batch(x: torch.Tensor, kind: str, pad: int = 4) -> torch.Tensor:
    """Random crop (zero padding `pad`) and/or horizontal flip, per sample, vectorised on x's device."""
    if kind == "none":
        return x
    n, c, h, w = x.shape
    dy = torch.randint(0, 2 * pad + 1, (n,), device=x.device)
    dx = torch.randint(0, 2 * pad + 1, (n,), device=x.device)
    rows = (torch.arange(h, device=x.device)[None, :] + dy[:, None])[:, None, :, None]
    cols = (torch.arange(w, device=x.device)[None, :] + dx[:, None])[:, None, None, :]
    padded = F.pad(x, (pad, pad, pad, pad))
    out = padded[torch.arange(n, device=x.device)[:, None, None, None], torch.arange(c, device=x.device)[None, :, None, None], rows, cols]
    if kind == "crop_flip":
        flip = torch.rand(n, device=x.device) < 0.5
        out = torch.where(flip[:, None, None, None], out.flip(3), out)
    return out


# ---------------------------------------------------------------- loaders

def _missing(name: str, looked: list[Path], how: str) -> DataMissingError:
    where = ", ".join(str(p) for p in looked)
    return DataMissingError(f"dataset {name}: files not found in {where}; {how}")


def read_idx(path: Path) -> np.ndarray:
    """Read an IDX file (MNIST format), gzip-compressed or not."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as fh:
        data = fh.read()
    if data[0] != 0 or data[1] != 0 or data[2] != 0x08:
        raise ValueError(f"{path}: not an unsigned-byte IDX file")
    ndim = data[3]
    dims = [int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim)]
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)


FASHION_DIRS = [Path("/usr/share/datasets/fashion-mnist"), Path("data/FashionMNIST/raw"), Path("~/.cache/acs/FashionMNIST/raw").expanduser()]


def _find_idx(folder: Path, stem: str) -> Path | None:
    for candidate in (folder / stem, folder / f"{stem}.gz", folder / "FashionMNIST" / "raw" / stem, folder / "FashionMNIST" / "raw" / f"{stem}.gz"):
        if candidate.is_file():
            return candidate
    return None


def load_fashion_mnist(root: Path | None, download: bool) -> tuple[Split, Split]:
    """Fashion-MNIST from Debian's dataset-fashion-mnist or a torchvision-layout folder (IDX files, .gz or not)."""
    folders = [root] if root else FASHION_DIRS
    for folder in folders:
        files = [_find_idx(folder, f"{p}-{k}-idx{d}-ubyte") for p in ("train", "t10k") for k, d in (("images", 3), ("labels", 1))]
        if all(files):
            xtr, ytr, xte, yte = (torch.from_numpy(read_idx(f).copy()) for f in files)  # type: ignore[arg-type]
            return Split(xtr[:, None], ytr.long()), Split(xte[:, None], yte.long())
    raise _missing("fashion_mnist", folders, "install it with `apt-get install dataset-fashion-mnist` or pass data_dir=FOLDER (torchvision layout)")


def _torchvision_loader(name: str, cls_name: str, default: str, split_kw: bool) -> Callable[[Path | None, bool], tuple[Split, Split]]:
    """A loader through torchvision's own dataset class (its on-disk format, its integrity checks, its download)."""

    def load(root: Path | None, download: bool) -> tuple[Split, Split]:
        import torchvision.datasets as tvd

        folder = root or Path(os.environ.get("ACS_DATA", default)).expanduser()
        cls = getattr(tvd, cls_name)
        try:
            if split_kw:
                parts = [cls(str(folder), split=s, download=download) for s in ("train", "test")]
            else:
                parts = [cls(str(folder), train=t, download=download) for t in (True, False)]
        except RuntimeError as err:  # torchvision: "Dataset not found or corrupted. You can use download=True ..."
            raise _missing(name, [folder], f"pass download=true on a machine with internet, or stage torchvision's files there ({err})") from None
        except OSError as err:  # a failed download (no internet) or unreadable file
            raise _missing(name, [folder], f"download failed ({err.__class__.__name__}); stage torchvision's files there") from None
        splits = []
        for ds in parts:
            x = torch.from_numpy(np.ascontiguousarray(ds.data))
            if x.shape[-1] == 3:  # CIFAR stores HWC, SVHN CHW
                x = x.permute(0, 3, 1, 2).contiguous()
            y = torch.as_tensor(np.asarray(ds.targets if hasattr(ds, "targets") else ds.labels), dtype=torch.long)
            splits.append(Split(x, y))
        return splits[0], splits[1]

    return load


def load_synthetic(root: Path | None, download: bool, n_train: int = 2000, n_test: int = 500,
                   shape: tuple[int, int, int] = (1, 16, 16)) -> tuple[Split, Split]:
    """A small learnable image set: 10 class templates of `shape` plus noise, quantised to uint8; fixed seed."""
    g = torch.Generator().manual_seed(1234)
    templates = torch.rand(10, *shape, generator=g)

    def draw(n: int) -> Split:
        y = torch.arange(n) % 10
        x = 0.6 * templates[y] + 0.4 * torch.rand(n, *shape, generator=g)
        return Split((x * 255).round().to(torch.uint8), y)

    return draw(n_train), draw(n_test)


IMAGEFOLDER_DEFAULT = "data/imagefolder"


def _imagefolder_root(root: Path | None) -> Path:
    """data_dir, else $ACS_DATA, else data/imagefolder (as the torchvision data sets)."""
    return root or Path(os.environ.get("ACS_DATA", IMAGEFOLDER_DEFAULT)).expanduser()


def imagefolder_classes(root: Path | None) -> tuple[Path, list[str]]:
    """The data set folder and its class names (the subfolders of train/, sorted); a missing folder is one line."""
    folder = _imagefolder_root(root)
    train = folder / "train"
    classes = sorted(d.name for d in train.iterdir() if d.is_dir()) if train.is_dir() else []
    if not classes:
        raise _missing("imagefolder", [train], "pass data_dir=FOLDER holding train/ and val/ (or test/), one subfolder of images per class")
    return folder, classes


def _imagefolder_split(folder: Path, classes: list[str], size: int) -> Split:
    """Every image under `folder`'s class subfolders, RGB, shorter side resized to round(size * 256 / 224) and
    centre-cropped to size x size, as uint8 (N, 3, size, size); labels by class name in `classes` (train's)."""
    import torchvision.datasets as tvd
    import torchvision.transforms as T

    transform = T.Compose([T.Resize(round(size * 256 / 224)), T.CenterCrop(size), T.PILToTensor()])
    try:
        ds = tvd.ImageFolder(str(folder), transform=transform, allow_empty=True)
    except FileNotFoundError as err:  # no class subfolder at all
        raise _missing("imagefolder", [folder], f"put one subfolder of images per class there ({err})") from None
    unknown = sorted(set(ds.classes) - set(classes))
    if unknown:
        raise ConfigError(f"data_dir: {folder} has classes {', '.join(unknown)} that train/ lacks; use the same class subfolders")
    x = torch.empty(len(ds), 3, size, size, dtype=torch.uint8)
    for i in range(len(ds)):
        x[i] = ds[i][0]
    remap = torch.tensor([classes.index(c) for c in ds.classes], dtype=torch.long)
    return Split(x, remap[torch.as_tensor(ds.targets, dtype=torch.long)])


def load_imagefolder(root: Path | None, download: bool, size: int = 224) -> tuple[Split, Split]:
    """An ImageNet-style folder: DIR/train/CLASS/*.jpg and DIR/val/CLASS/*.jpg (or test/), through torchvision's
    ImageFolder; train/'s sorted class names give the labels."""
    folder, classes = imagefolder_classes(root)
    held_out = next((folder / name for name in ("val", "test") if (folder / name).is_dir()), None)
    if held_out is None:
        raise _missing("imagefolder", [folder / "val", folder / "test"], "add a val/ (or test/) folder with the same class subfolders as train/")
    return _imagefolder_split(folder / "train", classes, size), _imagefolder_split(held_out, classes, size)


def _configure_imagefolder(spec: DataSpec, cfg: RunConfig) -> DataSpec:
    """The image size from `image_size` and the class count from the folder (so a missing folder fails first)."""
    _, classes = imagefolder_classes(Path(cfg.data_dir).expanduser() if cfg.data_dir else None)
    return replace(spec, load=partial(load_imagefolder, size=cfg.image_size), num_classes=len(classes),
                   shape=(3, cfg.image_size, cfg.image_size), configure=None)


_CIFAR_MEAN, _CIFAR_STD = (0.4914, 0.4822, 0.4465), (0.2471, 0.2435, 0.2616)
DATASETS.register("fashion_mnist", "Fashion-MNIST 28x28 grey, 10 classes (real, offline from Debian's dataset-fashion-mnist)")(
    DataSpec(load_fashion_mnist, 10, (1, 28, 28), (0.2860,), (0.3530,), 0.1, 1.5, "none"))
DATASETS.register("cifar10", "CIFAR-10 32x32 colour, 10 classes, via torchvision (download or staged folder)")(
    DataSpec(_torchvision_loader("cifar10", "CIFAR10", "data/cifar10", False), 10, (3, 32, 32), _CIFAR_MEAN, _CIFAR_STD, 8 / 255, 0.5, "crop_flip"))
DATASETS.register("cifar100", "CIFAR-100 32x32 colour, 100 classes, via torchvision (download or staged folder)")(
    DataSpec(_torchvision_loader("cifar100", "CIFAR100", "data/cifar100", False), 100, (3, 32, 32), (0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762), 8 / 255, 0.5, "crop_flip"))
DATASETS.register("svhn", "SVHN 32x32 colour digits, 10 classes, via torchvision (download or staged folder)")(
    DataSpec(_torchvision_loader("svhn", "SVHN", "data/svhn", True), 10, (3, 32, 32), (0.4377, 0.4438, 0.4728), (0.1980, 0.2010, 0.1970), 8 / 255, 0.5, "crop"))
DATASETS.register("synthetic", "generated 16x16 grey images of 10 noisy class templates, for fast tests")(
    DataSpec(load_synthetic, 10, (1, 16, 16), (0.5,), (0.25,), 0.1, 1.0, "none", eps_perceptual=1.0))
DATASETS.register("synthetic_cifar", "generated 32x32 colour images of 10 noisy class templates with CIFAR-10's "
                  "normalisation, eps and augmentation (10,000 train, 2,000 test), for checks without data (GPU)")(
    DataSpec(partial(load_synthetic, n_train=10_000, n_test=2_000, shape=(3, 32, 32)), 10, (3, 32, 32), _CIFAR_MEAN,
             _CIFAR_STD, 8 / 255, 0.5, "crop_flip"))
DATASETS.register("imagefolder", "an ImageNet-style folder (data_dir/train/CLASS/*, data_dir/val/CLASS/*), RGB, "
                  "resized and centre-cropped to image_size, e.g. a 12-class ImageNet subset")(
    DataSpec(partial(load_imagefolder, size=224), 0, (3, 224, 224), (0.485, 0.456, 0.406), (0.229, 0.224, 0.225),
             4 / 255, 1200 / 255, "crop_flip", eps_perceptual=0.25, configure=_configure_imagefolder))
