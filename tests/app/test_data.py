"""Data sources: shapes, labels, splits, layouts and the errors for missing data.

No test touches the network: ``paddle.dataset.common.download`` is replaced by a
function that raises, as it does on an offline machine.
"""
import gzip
import io
import pickle
import re
import tarfile

import numpy as np
import paddle
import pytest
from PIL import Image

from slim_callbacks.app.array_data import ArrayDataset, resize_matrix, to_channels
from slim_callbacks.app.data import SOURCES, build_datasets
from slim_callbacks.app.recipe import load_recipe
from slim_callbacks.app.schema import DATA_SOURCES
from slim_callbacks.core.errors import ConfigError, SlimError

SHAPE = [1, 3, 32, 32]


@pytest.fixture(autouse=True)
def offline(monkeypatch):
    """Every download fails at once, like paddle.vision.datasets on this machine."""
    def no_network(url, module_name, md5sum, save_name=None):
        raise RuntimeError(f"Cannot download {url} within retry limit 3")
    monkeypatch.setattr(paddle.dataset.common, "download", no_network)


def check_item(item, shape, classes=None):
    image, label = item
    assert isinstance(image, np.ndarray) and image.dtype == np.float32
    assert image.shape == tuple(shape)
    assert isinstance(label, np.ndarray) and label.dtype == np.int64 and label.shape == (1,)
    if classes is not None:
        assert 0 <= int(label[0]) < classes


def test_every_recipe_source_has_a_builder():
    assert sorted(SOURCES) == sorted(DATA_SOURCES)


# ------------------------------------------------------------------ digits


@pytest.fixture(scope="module")
def digits():
    return build_datasets({"source": "digits"}, SHAPE)


def test_digits_shapes_and_split(digits):
    train, evaluation = digits
    assert (len(train), len(evaluation)) == (1437, 360)
    check_item(train[0], (3, 32, 32), 10)
    check_item(evaluation[-1], (3, 32, 32), 10)
    assert train.images.shape == (1437, 3, 32, 32)  # upscaled once, at build time


def test_digits_split_is_stratified(digits):
    train, evaluation = digits
    counts = np.bincount(evaluation.labels, minlength=10)
    assert counts.min() >= 34 and counts.max() <= 38
    assert np.bincount(train.labels, minlength=10).sum() + counts.sum() == 1797


def test_digits_are_normalized_grey_replicated(digits):
    images = digits[0].images
    assert abs(float(images.mean())) < 0.05 and abs(float(images.std()) - 1) < 0.1
    assert np.array_equal(images[:, 0], images[:, 2])


def test_digits_are_deterministic(digits):
    train, evaluation = build_datasets({"source": "digits"}, SHAPE)
    assert np.array_equal(train.images, digits[0].images)
    assert np.array_equal(evaluation.labels, digits[1].labels)


@pytest.mark.parametrize("shape", [[1, 1, 16, 16], [2, 3, 24, 40]])
def test_digits_other_shapes(shape):
    train, _ = build_datasets({"source": "digits"}, shape)
    check_item(train[3], shape[1:], 10)


def test_caps_take_a_fixed_subset():
    cfg = {"source": "digits", "samples": 50, "train_samples": 100}
    train, evaluation = build_datasets(cfg, SHAPE)
    assert (len(train), len(evaluation)) == (100, 50)
    check_item(evaluation[49], (3, 32, 32), 10)
    again = build_datasets(cfg, SHAPE)[1]
    assert all(np.array_equal(evaluation[i][0], again[i][0]) for i in (0, 25, 49))


def test_recipe_data_section_builds():
    recipe = load_recipe({"name": "d", "model": {"name": "mobilenet_v1"},
                          "data": {"source": "digits", "image_size": 16}})
    train, _ = build_datasets(recipe.data, recipe.input_shape)
    check_item(train[0], (3, 16, 16), 10)


def test_batches_for_model_fit(digits):
    loader = paddle.io.DataLoader(digits[0], batch_size=8, shuffle=False)
    images, labels = next(iter(loader))
    assert images.shape == [8, 3, 32, 32] and labels.shape == [8, 1]
    assert labels.dtype == paddle.int64


def test_model_fit_runs_on_synthetic():
    train, evaluation = build_datasets(
        {"source": "synthetic", "train_samples": 16, "samples": 8, "num_classes": 4},
        [1, 3, 8, 8])
    net = paddle.nn.Sequential(paddle.nn.Conv2D(3, 4, 3), paddle.nn.Flatten(),
                               paddle.nn.Linear(4 * 6 * 6, 4))
    model = paddle.Model(net)
    model.prepare(paddle.optimizer.SGD(0.01, parameters=net.parameters()),
                  paddle.nn.CrossEntropyLoss(), paddle.metric.Accuracy())
    model.fit(train, evaluation, batch_size=8, epochs=1, verbose=0)
    assert "acc" in model.evaluate(evaluation, batch_size=8, verbose=0)


# ------------------------------------------------------------------ resizing


@pytest.mark.parametrize("size_in, size_out", [((8, 8), (32, 32)), ((8, 8), (5, 7)),
                                               ((10, 6), (10, 13))])
def test_resize_matches_paddle_bilinear(size_in, size_out):
    images = np.random.default_rng(0).random((2, 3, *size_in), dtype=np.float32)
    ours = resize_matrix(size_in[0], size_out[0]) @ images @ resize_matrix(
        size_in[1], size_out[1]).T
    theirs = paddle.nn.functional.interpolate(paddle.to_tensor(images), size=list(size_out),
                                              mode="bilinear", align_corners=False)
    np.testing.assert_allclose(ours, theirs.numpy(), atol=1e-5)


def test_channel_conversion():
    rgb = np.random.default_rng(0).random((3, 4, 4), dtype=np.float32)
    assert to_channels(rgb, 1).shape == (1, 4, 4)
    with pytest.raises(SlimError, match="cannot turn 2-channel images into 3 channels"):
        to_channels(np.zeros((2, 4, 4), np.float32), 3)


def test_array_dataset_needs_one_label_per_image():
    with pytest.raises(SlimError, match="3 images but 2 labels"):
        ArrayDataset(np.zeros((3, 1, 2, 2)), np.arange(2))


# ------------------------------------------------------------------ npz


def write_npz(path, **arrays):
    np.savez(path, **arrays)
    return str(path)


def test_npz_nhwc_uint8(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (12, 8, 8, 3), dtype=np.uint8)
    path = write_npz(tmp_path / "d.npz", x_train=x, y_train=np.arange(12)[:, None] % 3,
                     x_test=x[:4], y_test=np.arange(4) % 3)
    train, evaluation = build_datasets({"source": "npz", "path": path}, [1, 3, 16, 16])
    assert (len(train), len(evaluation)) == (12, 4)
    check_item(train[5], (3, 16, 16), 3)
    assert int(train[5][1][0]) == 2
    stacked = np.stack([train[i][0] for i in range(12)])
    assert np.abs(stacked.mean(axis=(0, 2, 3))).max() < 0.1  # per-channel train stats


def test_npz_grey_uint8_is_replicated(tmp_path):
    x = np.random.default_rng(0).integers(0, 256, (6, 10, 10), dtype=np.uint8)
    path = write_npz(tmp_path / "g.npz", x_train=x, y_train=np.zeros(6, np.int32),
                     x_test=x, y_test=np.zeros(6, np.int32))
    image = build_datasets({"source": "npz", "path": path}, [1, 3, 10, 10])[0][0][0]
    assert image.shape == (3, 10, 10) and np.array_equal(image[0], image[1])


def test_npz_nchw_float_is_used_as_is(tmp_path):
    x = np.random.default_rng(0).standard_normal((5, 3, 16, 16)).astype(np.float32)
    path = write_npz(tmp_path / "f.npz", x_train=x, y_train=np.arange(5),
                     x_test=x[:2], y_test=np.arange(2))
    train, evaluation = build_datasets({"source": "npz", "path": path}, [1, 3, 16, 16])
    np.testing.assert_allclose(train[4][0], x[4], atol=1e-6)
    check_item(evaluation[1], (3, 16, 16))


def test_npz_missing_file(tmp_path):
    missing = str(tmp_path / "none.npz")
    with pytest.raises(SlimError, match=re.escape(
            f"data.path: no file at {missing!r}; expected an .npz file with arrays "
            "x_train, y_train, x_test, y_test")):
        build_datasets({"source": "npz", "path": missing}, SHAPE)


def test_npz_missing_arrays(tmp_path):
    path = write_npz(tmp_path / "half.npz", x_train=np.zeros((2, 8, 8, 3), np.uint8),
                     y_train=np.zeros(2, int))
    with pytest.raises(SlimError, match=r"half.npz: missing arrays x_test, y_test \(found "
                                        r"x_train, y_train\); expected an .npz file"):
        build_datasets({"source": "npz", "path": path}, SHAPE)


@pytest.mark.parametrize("arrays, pattern", [
    ({"x_train": np.zeros((2, 8, 8, 3), np.float32)},
     r"x_train has shape \(2, 8, 8, 3\) and dtype float32; expected NHWC uint8 "
     r"\(N, H, W, 1 or 3\) or NCHW float \(N, 1 or 3, H, W\)"),
    ({"x_train": np.zeros((2, 5, 8, 8), np.uint8)},
     r"x_train has shape \(2, 5, 8, 8\) and dtype uint8; expected NHWC uint8"),
    ({"y_train": np.zeros(2, np.float32)},
     r"y_train has shape \(2,\) and dtype float32; expected integer class labels"),
    ({"y_train": np.zeros(3, int)}, r"2 images but 3 labels; expected one label per image"),
    ({"y_test": np.array([0, -1])}, r"label -1 is negative"),
    ({"x_test": np.zeros((2, 9, 9, 3), np.uint8)},
     r"x_train images are \(3, 8, 8\) but x_test images are \(3, 9, 9\)"),
])
def test_npz_layout_errors(tmp_path, arrays, pattern):
    good = {"x_train": np.zeros((2, 8, 8, 3), np.uint8), "y_train": np.zeros(2, int),
            "x_test": np.zeros((2, 8, 8, 3), np.uint8), "y_test": np.zeros(2, int)}
    path = write_npz(tmp_path / "bad.npz", **{**good, **arrays})
    with pytest.raises(SlimError, match=pattern):
        build_datasets({"source": "npz", "path": path}, SHAPE)


def test_npz_labels_must_fit_num_classes(tmp_path):
    x = np.zeros((2, 8, 8, 3), np.uint8)
    path = write_npz(tmp_path / "c.npz", x_train=x, y_train=np.array([0, 7]), x_test=x,
                     y_test=np.array([0, 1]))
    with pytest.raises(SlimError, match="label 7 is not below data.num_classes=5"):
        build_datasets({"source": "npz", "path": path, "num_classes": 5}, SHAPE)


@pytest.mark.parametrize("content", [b"x_train,y_train\n1,2\n", b"\x89\xff\x00binary\x00",
                                     b"PK\x03\x04truncated"])
def test_npz_that_is_not_an_npz_is_one_line(tmp_path, content):
    path = tmp_path / "text.npz"
    path.write_bytes(content)
    with pytest.raises(ConfigError, match=rf"^data\.path: '{re.escape(str(path))}' is not "
                                          r"allowed; expected an \.npz file .* \(this file "
                                          r"is not a numpy archive\)$"):
        build_datasets({"source": "npz", "path": str(path)}, SHAPE)


def test_npz_object_arrays_are_refused_not_unpickled(tmp_path):
    x = np.zeros((2, 8, 8, 3), np.uint8)
    path = write_npz(tmp_path / "o.npz", x_train=x, y_train=np.array([0, "cat"], dtype=object),
                     x_test=x, y_test=np.zeros(2, int))
    with pytest.raises(ConfigError, match=r"^data\.path: .* y_train cannot be read without "
                                          r"unpickling"):
        build_datasets({"source": "npz", "path": path}, SHAPE)


def test_empty_npz_is_one_line(tmp_path):
    with pytest.raises(SlimError, match=r"missing arrays x_train, y_train, x_test, y_test "
                                        r"\(found none\)"):
        build_datasets({"source": "npz", "path": write_npz(tmp_path / "e.npz")}, SHAPE)
    none = np.zeros((0, 8, 8, 3), np.uint8)
    path = write_npz(tmp_path / "z.npz", x_train=none, y_train=np.zeros(0, int), x_test=none,
                     y_test=np.zeros(0, int))
    with pytest.raises(ConfigError, match=r"x_train holds no samples"):
        build_datasets({"source": "npz", "path": path}, SHAPE)


def npz_recipe(path, **data):
    return {"name": "n", "model": {"name": "mobilenet_v1", "kwargs": {"scale": 0.25}},
            "data": {"source": "npz", "path": path, **data}}


@pytest.mark.parametrize("largest", [9, 1499])
def test_npz_num_classes_is_inferred_from_the_labels(tmp_path, largest):
    """No num_classes used to build the model's default 1000-class head."""
    from slim_callbacks.app.builders import build_network
    from slim_callbacks.app.job import load_job
    x = np.zeros((3, 8, 8, 3), np.uint8)
    path = write_npz(tmp_path / "l.npz", x_train=x, y_train=np.array([0, 2, largest]),
                     x_test=x, y_test=np.array([1, 1, 0]))
    job = load_job(npz_recipe(path))
    assert job.recipe.data.num_classes == largest + 1
    assert job.notes == (f"data: {largest + 1} classes inferred from labels 0..{largest} "
                         f"of {path}",)
    assert build_network(job.recipe).fc.weight.shape == [256, largest + 1]
    given = load_job(npz_recipe(path, num_classes=2000))
    assert given.recipe.data.num_classes == 2000 and given.notes == ()


def test_npz_negative_labels_fail_before_the_model_is_built(tmp_path):
    from slim_callbacks.app.job import load_job
    x = np.zeros((2, 8, 8, 3), np.uint8)
    path = write_npz(tmp_path / "n.npz", x_train=x, y_train=np.array([0, -3]), x_test=x,
                     y_test=np.array([0, 1]))
    with pytest.raises(SlimError, match=r"label -3 is negative; expected class indices >= 0"):
        load_job(npz_recipe(path))


# ------------------------------------------------------------------ image files


def write_image(path, size=(20, 14), suffix_mode="RGB", seed=0):
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), np.uint8)
    Image.fromarray(pixels).convert(suffix_mode).save(path)
    return path


@pytest.fixture
def folder(tmp_path):
    for split, count in (("train", 3), ("val", 1)):
        for label, name in enumerate(("cat", "dog")):
            for i in range(count):
                suffix = ".jpg" if i % 2 else ".png"
                write_image(tmp_path / split / name / f"{i}{suffix}", seed=label * 10 + i)
    (tmp_path / "train" / "cat" / "notes.txt").write_text("not an image")
    return tmp_path


def test_imagefolder(folder):
    train, evaluation = build_datasets({"source": "imagefolder", "root": str(folder)},
                                       [1, 3, 16, 16])
    assert (len(train), len(evaluation)) == (6, 2)
    assert [label for _, label in train.samples] == [0, 0, 0, 1, 1, 1]
    check_item(train[4], (3, 16, 16), 2)
    check_item(evaluation[1], (3, 16, 16), 2)
    assert int(evaluation[1][1][0]) == 1


def test_imagefolder_grey_non_square(folder):
    train, evaluation = build_datasets({"source": "imagefolder", "root": str(folder)},
                                       [1, 1, 12, 16])
    check_item(train[0], (1, 12, 16))
    check_item(evaluation[0], (1, 12, 16))


def test_imagefolder_eval_transform_is_deterministic(folder):
    _, evaluation = build_datasets({"source": "imagefolder", "root": str(folder)}, SHAPE)
    assert np.array_equal(evaluation[0][0], evaluation[0][0])


def test_imagefolder_missing_root(tmp_path):
    with pytest.raises(SlimError, match=re.escape(
            f"data.root: no directory at {str(tmp_path / 'nope' / 'train')!r}; expected "
            "root/train/<class>/*.jpg and root/val/<class>/*.jpg")):
        build_datasets({"source": "imagefolder", "root": str(tmp_path / "nope")}, SHAPE)


def test_imagefolder_missing_val(folder):
    import shutil
    shutil.rmtree(folder / "val")
    with pytest.raises(SlimError, match="no directory at .*val'"):
        build_datasets({"source": "imagefolder", "root": str(folder)}, SHAPE)


def test_imagefolder_val_class_unknown(folder):
    write_image(folder / "val" / "emu" / "0.png")
    with pytest.raises(SlimError, match="has classes emu that .*train lacks; expected the "
                                        "classes cat, dog"):
        build_datasets({"source": "imagefolder", "root": str(folder)}, SHAPE)


def test_imagefolder_without_images(tmp_path):
    (tmp_path / "train" / "cat").mkdir(parents=True)
    (tmp_path / "val").mkdir()
    with pytest.raises(SlimError, match="holds no images"):
        build_datasets({"source": "imagefolder", "root": str(tmp_path)}, SHAPE)


@pytest.fixture
def paddleclas(tmp_path):
    write_image(tmp_path / "images" / "a.jpg")
    write_image(tmp_path / "images" / "b.png", seed=1)
    write_image(tmp_path / "my images" / "c.jpg", seed=2)
    (tmp_path / "train_list.txt").write_text("images/a.jpg 0\nimages/b.png 2\n\n"
                                             "my images/c.jpg 1\n")
    (tmp_path / "val_list.txt").write_text("images/b.png 2\n")
    return tmp_path


def test_paddleclas_lists(paddleclas):
    train, evaluation = build_datasets({"source": "imagenet", "root": str(paddleclas)},
                                       [1, 3, 16, 16])
    assert (len(train), len(evaluation)) == (3, 1)
    assert [label for _, label in train.samples] == [0, 2, 1]
    check_item(train[2], (3, 16, 16), 3)
    image, label = evaluation[0]
    check_item((image, label), (3, 16, 16))
    assert int(label[0]) == 2


def test_paddleclas_missing_list(paddleclas):
    (paddleclas / "val_list.txt").unlink()
    with pytest.raises(SlimError, match=re.escape(
            f"data.root: expected the list file {paddleclas / 'val_list.txt'} (PaddleClas "
            "layout: one 'relative/path.jpg label' line per image)")):
        build_datasets({"source": "imagenet", "root": str(paddleclas)}, SHAPE)


def test_paddleclas_missing_root(tmp_path):
    with pytest.raises(SlimError, match="data.root: no directory at .*nope'; expected the "
                                        "PaddleClas dataset root"):
        build_datasets({"source": "imagenet", "root": str(tmp_path / "nope")}, SHAPE)


@pytest.mark.parametrize("text, pattern", [
    ("images/a.jpg\n", r"train_list.txt:1: 'images/a.jpg' is not 'relative/path.jpg label'"),
    ("images/a.jpg 0\nimages/b.png cat\n", r"train_list.txt:2: 'images/b.png cat' is not"),
    ("images/zzz.jpg 0\n", r"the first image .*zzz.jpg does not exist; expected paths "
                           r"relative to data.root"),
    ("\n", r"train_list.txt lists no images"),
])
def test_paddleclas_bad_list(paddleclas, text, pattern):
    (paddleclas / "train_list.txt").write_text(text)
    with pytest.raises(SlimError, match=pattern):
        build_datasets({"source": "imagenet", "root": str(paddleclas)}, SHAPE)


# ------------------------------------------------------------------ cifar10 / mnist


def test_cifar10_offline_says_what_to_point_at():
    with pytest.raises(SlimError, match=re.escape(
            "data.source 'cifar10' could not be loaded (Cannot download")) as info:
        build_datasets({"source": "cifar10"}, SHAPE)
    assert "data.path: /path/to/cifar-10-python.tar.gz" in str(info.value)
    assert "data.source: digits (bundled) or npz" in str(info.value)


def test_cifar10_missing_local_file(tmp_path):
    missing = str(tmp_path / "cifar.tar.gz")
    with pytest.raises(SlimError, match=re.escape(
            f"data.path: no file at {missing!r}; expected /path/to/cifar-10-python.tar.gz")):
        build_datasets({"source": "cifar10", "path": missing}, SHAPE)


def write_cifar(path, train=6, test=3):
    rng = np.random.default_rng(0)
    with tarfile.open(path, "w:gz") as archive:
        for name, count in (("data_batch_1", train), ("test_batch", test)):
            batch = {b"data": rng.integers(0, 256, (count, 3072), dtype=np.uint8),
                     b"labels": [i % 10 for i in range(count)]}
            payload = pickle.dumps(batch)
            info = tarfile.TarInfo(f"cifar-10-batches-py/{name}")
            info.size = len(payload)
            archive.addfile(info, io.BytesIO(payload))
    return str(path)


def test_cifar10_local_copy(tmp_path):
    path = write_cifar(tmp_path / "cifar-10-python.tar.gz")
    train, evaluation = build_datasets({"source": "cifar10", "path": path}, [1, 3, 40, 40])
    assert (len(train), len(evaluation)) == (6, 3)
    check_item(train[5], (3, 40, 40), 10)
    assert int(train[5][1][0]) == 5
    check_item(evaluation[2], (3, 40, 40), 10)


def write_mnist(directory, count=100):
    directory.mkdir(exist_ok=True)
    rng = np.random.default_rng(0)
    for prefix in ("train", "t10k"):
        images = np.array([2051, count, 28, 28], ">u4").tobytes() + \
            rng.integers(0, 256, count * 784, dtype=np.uint8).tobytes()
        labels = np.array([2049, count], ">u4").tobytes() + \
            (np.arange(count) % 10).astype(np.uint8).tobytes()
        (directory / f"{prefix}-images-idx3-ubyte.gz").write_bytes(gzip.compress(images))
        (directory / f"{prefix}-labels-idx1-ubyte.gz").write_bytes(gzip.compress(labels))
    return str(directory)


def test_mnist_local_copy(tmp_path):
    path = write_mnist(tmp_path / "mnist")
    train, evaluation = build_datasets({"source": "mnist", "path": path}, [1, 3, 32, 32])
    assert (len(train), len(evaluation)) == (100, 100)
    image, label = train[13]
    check_item((image, label), (3, 32, 32), 10)
    assert int(label[0]) == 3 and np.array_equal(image[0], image[1])


def test_mnist_offline_says_what_to_point_at():
    with pytest.raises(SlimError, match=r"data.source 'mnist' could not be loaded .*offline, "
                                        r"point the recipe at a local copy with data.path: "
                                        r"a directory with train-images-idx3-ubyte.gz"):
        build_datasets({"source": "mnist"}, [1, 1, 28, 28])


def test_mnist_missing_files(tmp_path):
    (tmp_path / "train-images-idx3-ubyte.gz").write_bytes(b"")
    with pytest.raises(SlimError, match=r"data.path: .*train-labels-idx1-ubyte.gz, .*"
                                        r"t10k-labels-idx1-ubyte.gz not found; expected a "
                                        r"directory with"):
        build_datasets({"source": "mnist", "path": str(tmp_path)}, SHAPE)


# ------------------------------------------------------------------ synthetic, arguments


def test_synthetic():
    train, evaluation = build_datasets({"source": "synthetic", "num_classes": 3},
                                       [1, 3, 24, 24])
    assert (len(train), len(evaluation)) == (64, 32)
    check_item(train[63], (3, 24, 24), 3)
    assert set(train.labels.tolist()) == {0, 1, 2}
    again, _ = build_datasets({"source": "synthetic", "num_classes": 3}, [1, 3, 24, 24])
    assert np.array_equal(train[7][0], again[7][0]) and np.array_equal(train.labels,
                                                                       again.labels)
    assert not np.array_equal(train[0][0], evaluation[0][0])


def test_synthetic_defaults_to_ten_classes_and_any_channels():
    train, _ = build_datasets({"source": "synthetic", "train_samples": 200}, [1, 5, 4, 4])
    check_item(train[0], (5, 4, 4), 10)
    assert len(train) == 200 and int(train.labels.max()) == 9


def test_docstring_examples_run():
    import doctest

    import slim_callbacks.app.data as module
    assert doctest.testmod(module, optionflags=doctest.ELLIPSIS).failed == 0


def test_bad_input_shape():
    with pytest.raises(ConfigError, match=re.escape(
            "input_shape: [3, 32, 32] is not allowed; expected a list of 4 positive ints")):
        build_datasets({"source": "digits"}, [3, 32, 32])
    with pytest.raises(ConfigError, match=re.escape(
            "input_shape[1]: 2 is not allowed; expected 1 or 3 channels for source digits")):
        build_datasets({"source": "digits"}, [1, 2, 32, 32])


def test_data_mapping_is_validated():
    with pytest.raises(ConfigError, match=r"^data\.rot: '/x' is not allowed; expected a key "
                                          r"of data: source, root, path"):
        build_datasets({"source": "digits", "rot": "/x"}, SHAPE)
