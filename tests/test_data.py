"""Image folders, the train/validation split, patch and task sampling."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from metadip.data import (
    VALIDATION_LIST,
    PatchSampler,
    TaskSampler,
    list_images,
    load_images,
    read_image,
    resolve_source,
    split_files,
)
from metadip.operators import CompressiveSensing, Denoise, PhaseRetrieval
from metadip.tasks import TRAIN_SR_FACTORS


def _folder(tmp_path, n: int = 6, size: tuple[int, int] = (40, 50)):
    rng = np.random.default_rng(0)
    for i in range(n):
        a = (rng.random((*size, 3)) * 255).astype(np.uint8)
        Image.fromarray(a).save(tmp_path / f"img{i}.png")
    (tmp_path / "notes.txt").write_text("not an image")
    return tmp_path


def test_list_images_sorted_and_filtered(tmp_path):
    files = list_images(_folder(tmp_path))
    assert [f.name for f in files] == [f"img{i}.png" for i in range(6)]


def test_list_images_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        list_images(tmp_path / "missing")
    with pytest.raises(ValueError, match="no images in"):
        list_images(tmp_path)


def test_split_is_fixed_by_seed_and_disjoint():
    names = [f"f{i}" for i in range(20)]
    train, val = split_files(names, 0.25, seed=3)
    assert len(val) == 5 and len(train) == 15
    assert not set(train) & set(val) and set(train) | set(val) == set(names)
    assert split_files(list(reversed(names)), 0.25, seed=3) == (train, val)
    assert split_files(names, 0.25, seed=4)[1] != val
    assert split_files(names, 0.0)[1] == []
    with pytest.raises(ValueError, match=r"val_fraction must be in \[0, 1\)"):
        split_files(names, 1.0)


def test_load_images_from_folder_split_by_file(tmp_path):
    train, val = load_images(_folder(tmp_path), channels=1, val_fraction=0.34, seed=0)
    assert len(train) == 4 and len(val) == 2
    assert all(a.shape == (1, 40, 50) and a.dtype == np.uint8 for a in train.values())


def test_lossless_webp_reads_as_the_png(tmp_path):
    folder = _folder(tmp_path, n=2)
    for p in list_images(folder):
        with Image.open(p) as im:
            im.save(p.with_suffix(".webp"), "WEBP", lossless=True)
    files = list_images(folder)
    assert [p.suffix for p in files] == [".png", ".webp", ".png", ".webp"]
    for c in (1, 3):
        for png in files[::2]:
            assert np.array_equal(read_image(png.with_suffix(".webp"), c), read_image(png, c))
    with pytest.raises(ValueError, match="channels must be 1 or 3"):
        read_image(files[0], 2)


def test_validation_list_fixes_the_split(tmp_path):
    folder = _folder(tmp_path)
    names = [p.name for p in list_images(folder)]
    # Reversed split against the seeded one: the list wins, whatever the seed says.
    _, seeded_val = split_files(names, 0.34, 0)
    listed = [n for n in names if n not in seeded_val][:2]
    (folder / VALIDATION_LIST).write_text("\n".join(listed) + "\n\n")
    train, val = load_images(folder, channels=1, val_fraction=0.34, seed=0)
    assert sorted(val) == sorted(listed)
    assert sorted(train) == sorted(set(names) - set(listed))


@pytest.mark.parametrize(
    ("lines", "match"),
    [(["nope.png"], "does not hold.*nope.png"), ([], "is empty"), (None, "every image")],
)
def test_validation_list_errors(tmp_path, lines, match):
    folder = _folder(tmp_path)
    if lines is None:
        lines = [p.name for p in list_images(folder)]
    (folder / VALIDATION_LIST).write_text("\n".join(lines))
    with pytest.raises(ValueError, match=match):
        load_images(folder, channels=1)


def test_resolve_source(tmp_path):
    assert resolve_source(tmp_path) == tmp_path
    assert resolve_source("skimage") == "skimage"
    auto = resolve_source("auto")
    assert auto == "skimage" or auto.is_dir()
    with pytest.raises(FileNotFoundError, match="neither 'auto'"):
        resolve_source(tmp_path / "nope")


def test_patches_shape_range_and_determinism(tmp_path):
    train, _ = load_images(_folder(tmp_path), channels=3, val_fraction=0.0)
    s = PatchSampler(train, size=16)
    a = s.sample(5, torch.Generator().manual_seed(1))
    b = s.sample(5, torch.Generator().manual_seed(1))
    assert a.shape == (5, 3, 16, 16) and a.dtype == torch.float32
    assert float(a.min()) >= 0 and float(a.max()) <= 1
    assert torch.equal(a, b)


def test_flat_patches_are_rejected():
    flat = np.full((1, 64, 64), 128, np.uint8)
    flat[:, :8, :8] = np.arange(64, dtype=np.uint8).reshape(8, 8) * 4  # one textured corner
    s = PatchSampler({"x": flat}, size=8, augment=False, min_std=0.05, max_tries=500)
    p = s.sample(10, torch.Generator().manual_seed(0))
    assert all(float(q.std()) >= 0.05 for q in p)
    # Without rejection most crops of this image are flat.
    s0 = PatchSampler({"x": flat}, size=8, augment=False, min_std=0.0)
    p0 = s0.sample(10, torch.Generator().manual_seed(0))
    assert sum(float(q.std()) < 0.05 for q in p0) > 5


def test_augmentation_is_a_dihedral_transform():
    img = np.arange(16 * 16, dtype=np.uint8).reshape(1, 16, 16)
    s = PatchSampler({"x": img}, size=16, augment=True, min_std=0.0)
    base = torch.from_numpy(img.astype(np.float32) / 255)
    dihedral = []
    for k in range(4):
        r = torch.rot90(base, k, dims=(1, 2))
        dihedral += [r, r.flip(2)]
    seen = set()
    for p in s.sample(40, torch.Generator().manual_seed(0)):
        idx = [i for i, d in enumerate(dihedral) if torch.equal(p, d)]
        assert len(idx) == 1
        seen.add(idx[0])
    assert len(seen) > 4


def test_patch_sampler_errors():
    with pytest.raises(ValueError, match="smaller than the patch size 32"):
        PatchSampler({"a": np.zeros((1, 10, 10), np.uint8)}, size=32)
    with pytest.raises(ValueError, match="at least one image"):
        PatchSampler({}, size=8)


def test_task_sampler_mix_and_measurements():
    x = torch.rand(6, 1, 16, 16, generator=torch.Generator().manual_seed(0))
    ts = TaskSampler({"denoise": 1, "cs": 1, "pr": 1}, sigma=(10, 30), ratio=(0.3, 0.5))
    tasks = ts.sample(torch.cat([x] * 5), torch.Generator().manual_seed(0))
    kinds = {type(op) for _, op, _ in tasks}
    assert kinds == {Denoise, CompressiveSensing, PhaseRetrieval}
    for xi, op, y in tasks:
        assert tuple(y.shape) == op.out_shape and tuple(xi.shape) == op.in_shape
        assert 10 / 255 - 1e-9 <= op.sigma <= 30 / 255 + 1e-9
    again = ts.sample(torch.cat([x] * 5), torch.Generator().manual_seed(0))
    assert all(torch.equal(a[2], b[2]) for a, b in zip(tasks, again, strict=True))


def test_task_sampler_super_resolution_factors():
    x = torch.rand(16, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    tasks = TaskSampler({"sr": 1}).sample(x, torch.Generator().manual_seed(0))
    assert {op.factor for _, op, _ in tasks} == set(TRAIN_SR_FACTORS)
    for xi, op, y in tasks:
        assert tuple(y.shape) == (3, 16 // op.factor, 16 // op.factor)
        assert torch.allclose(op.forward(xi), F.avg_pool2d(xi, op.factor))


def test_task_sampler_errors():
    with pytest.raises(ValueError, match="unknown training task"):
        TaskSampler({"deblur": 1.0})
    with pytest.raises(ValueError, match="sigma must be a range"):
        TaskSampler({"denoise": 1.0}, sigma=(30, 10))
    with pytest.raises(ValueError, match="not all 0"):
        TaskSampler({"denoise": 0.0})
