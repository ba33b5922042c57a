"""miniImageNet loaders: the real zip (counts, shapes, pixels), and small fakes of the folder, csv and pickle formats.
"""
from __future__ import annotations

import io
import pickle
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from bench.data import mini_imagenet
from bench.data.mini_imagenet import CLASSES, NORMALIZATIONS, load_mini_imagenet
from bench.data.tree import FileTree
from bench.util.errors import UserError
from bench.util.paths import CACHE_DIR_ENV


@pytest.fixture(scope="module", autouse=True)
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One decoded-array cache for the test session (the data modules share it), never the user's cache."""
    path = tmp_path_factory.getbasetemp() / "data-cache"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(CACHE_DIR_ENV, str(path))
        yield path


def test_zip_counts_per_split(mini_imagenet_root: Path) -> None:
    tree = FileTree(mini_imagenet_root / "mini_imagenet" / mini_imagenet.ZIP_NAME)
    wnids = {}
    for split in ("train", "val", "test"):
        groups = mini_imagenet._folder_groups(tree, split)
        assert len(groups) == CLASSES[split] and {len(v) for v in groups.values()} == {600}
        wnids[split] = set(groups)
    assert not (wnids["train"] & wnids["val"] or wnids["train"] & wnids["test"] or wnids["val"] & wnids["test"])


def test_zip_val_split_decodes_like_pil(mini_imagenet_root: Path) -> None:
    """Decodes one split (16 x 600 JPEGs) to keep CI short; the other splits share the code path."""
    bank = load_mini_imagenet(mini_imagenet_root, "val")
    assert tuple(bank.images.shape) == (16, 600, 3, 84, 84) and len(bank.class_names) == 16
    with zipfile.ZipFile(mini_imagenet_root / "mini_imagenet" / mini_imagenet.ZIP_NAME) as z:
        for c, i in [(0, 0), (7, 311), (15, 599)]:
            wnid = bank.class_names[c]
            name = sorted(n for n in z.namelist() if n.startswith(f"miniImagenet/val/{wnid}/"))[i]
            expected = np.asarray(Image.open(io.BytesIO(z.read(name))).convert("RGB")).transpose(2, 0, 1)
            assert np.array_equal(bank.images[c, i].numpy(), expected)
    assert bank.mean == pytest.approx(tuple(m / 255 for m in (120.11, 114.71, 102.89)))
    assert bank.std == pytest.approx(tuple(s / 255 for s in (70.25, 68.21, 71.94)))


def _fake_images(size: tuple[int, int], classes: int, per_class: int) -> dict[str, list[tuple[str, Image.Image]]]:
    rng = np.random.default_rng(0)
    return {f"n{c:08d}": [(f"n{c:08d}{i:08d}.jpg",
                           Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)))
                          for i in range(per_class)] for c in range(classes)}


def _jpeg(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG")
    return buffer.getvalue()


def _decoded(data: bytes) -> np.ndarray:
    image = Image.open(io.BytesIO(data)).convert("RGB")
    if image.size != (84, 84):
        image = image.resize((84, 84), resample=Image.LANCZOS)
    return np.asarray(image).transpose(2, 0, 1)


def test_flat_images_and_csv_are_resized_with_lanczos(tmp_path: Path) -> None:
    folder = tmp_path / "mini_imagenet"
    (folder / "images").mkdir(parents=True)
    rows, expected = ["filename,label"], []
    for wnid, images in _fake_images((100, 90), 3, 4).items():
        for name, image in images:
            data = _jpeg(image)
            (folder / "images" / name).write_bytes(data)
            rows.append(f"{name},{wnid}")
            expected.append(_decoded(data))
    (folder / "test.csv").write_text("\n".join(rows) + "\n")
    bank = load_mini_imagenet(tmp_path, "test", classes=3, per_class=4)
    assert tuple(bank.images.shape) == (3, 4, 3, 84, 84) and bank.class_names == [f"n{c:08d}" for c in range(3)]
    assert np.array_equal(bank.images.numpy().reshape(12, 3, 84, 84), np.stack(expected))
    with pytest.raises(UserError, match="expected 20 classes x 600 images, found 3 classes"):
        load_mini_imagenet(tmp_path, "test")


def test_folders(tmp_path: Path) -> None:
    expected = []
    for wnid, images in _fake_images((84, 84), 2, 3).items():
        (tmp_path / "mini_imagenet" / "miniImagenet" / "val" / wnid).mkdir(parents=True)
        for name, image in images:
            data = _jpeg(image)
            (tmp_path / "mini_imagenet" / "miniImagenet" / "val" / wnid / name).write_bytes(data)
            expected.append(_decoded(data))
    bank = load_mini_imagenet(tmp_path, "val", format="folders", classes=2, per_class=3)
    assert np.array_equal(bank.images.numpy().reshape(6, 3, 84, 84), np.stack(expected))


def test_pickle_cache(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    data = rng.integers(0, 256, (6, 84, 84, 3), dtype=np.uint8)
    class_dict = {"n02": [1, 3, 5], "n01": [0, 2, 4]}
    (tmp_path / "mini_imagenet").mkdir()
    with open(tmp_path / "mini_imagenet" / "mini-imagenet-cache-train.pkl", "wb") as f:
        pickle.dump({"image_data": data, "class_dict": class_dict}, f)
    bank = load_mini_imagenet(tmp_path, "train", classes=2, per_class=3, normalization="pickle")
    assert bank.class_names == ["n01", "n02"]
    assert np.array_equal(bank.images[1].numpy(), data[[1, 3, 5]].transpose(0, 3, 1, 2))
    assert bank.mean == pytest.approx(tuple(m / 255 for m in NORMALIZATIONS["pickle"][0]))
    none = load_mini_imagenet(tmp_path, "train", classes=2, per_class=3, normalization="none")
    assert none.to_float(none.images).max().item() == pytest.approx(data.max() / 255)


def test_bad_input(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="mini_imagenet_84.zip"):
        load_mini_imagenet(tmp_path, "train")
    (tmp_path / "mini_imagenet").mkdir()
    (tmp_path / "mini_imagenet" / mini_imagenet.ZIP_NAME).write_bytes(b"PK\x03\x04 truncated")
    with pytest.raises(UserError, match="truncated"):
        load_mini_imagenet(tmp_path, "train")
    with pytest.raises(UserError, match="normalization"):
        load_mini_imagenet(tmp_path, "train", normalization="imagenet")
    with pytest.raises(UserError, match="split"):
        load_mini_imagenet(tmp_path, "validation")
    (tmp_path / "mini_imagenet" / "images").mkdir()
    (tmp_path / "mini_imagenet" / "images" / "a.jpg").write_bytes(b"not a jpeg")
    (tmp_path / "mini_imagenet" / "val.csv").write_text("filename,label\na.jpg,n01\n")
    with pytest.raises(UserError, match="cannot decode image a.jpg"):
        load_mini_imagenet(tmp_path, "val", format="csv", classes=1, per_class=1)
