"""Arrow-pointing generator: determinism, labels against geometry and drawn pixels, dataset API."""

import math

import numpy as np
import pytest
import torch
from scipy import ndimage

from training.data import arrows
from training.data.arrows import (
    EXTRAPOLATION_SEED,
    EXTRAPOLATION_SIZE,
    TEST_SEED,
    TEST_SIZE,
    TRAIN_SEED,
    TRAIN_SIZE,
    ArrowPointingDataset,
    make_split,
    min_resolution,
    render_images,
    render_sample,
    sample_geometry,
    split_resolutions,
)

# (resolution, scale): half-scale train / extrapolation, paper train / extrapolation.
SETTINGS = [(96, 0.5), (192, 0.5), (192, 1.0), (384, 1.0)]
EIGHT_CONNECTED = np.ones((3, 3), dtype=int)


def _samples(resolution: float, scale: float, count: int, stream: int):
    rng = np.random.default_rng(stream)
    seed = int(rng.integers(0, 2**31))
    for index in rng.choice(1_000_000, size=count, replace=False):
        yield render_sample(seed, int(index), resolution, scale)


def _half_line_distance(origin, angle: float, point) -> float:
    """Distance from point to the ray from origin along angle, written independently of the
    module: project onto the direction and clamp the foot point to the ray."""
    direction = np.array([math.cos(angle), math.sin(angle)])
    offset = np.asarray(point) - np.asarray(origin)
    foot = max(0.0, float(offset @ direction)) * direction
    return float(np.linalg.norm(offset - foot))


def _segments(geometry) -> list[tuple[np.ndarray, np.ndarray]]:
    """Shaft and head strokes rebuilt from centre, angle and length alone."""
    center = np.asarray(geometry["arrow_center"])
    angle, length = geometry["angle"], geometry["length"]
    unit = np.array([math.cos(angle), math.sin(angle)])
    tip = center + unit * length / 2
    segments = [(center - unit * length / 2, tip)]
    for side in (-0.5, 0.5):
        back = np.array([math.cos(angle + side), math.sin(angle + side)])
        segments.append((tip, tip - back * length / 2.5))
    return segments


def _segment_distance(points: np.ndarray, start: np.ndarray, end: np.ndarray) -> np.ndarray:
    delta = end - start
    t = np.clip((points - start) @ delta / (delta @ delta), 0.0, 1.0)
    return np.linalg.norm(points - start - t[:, None] * delta, axis=1)


def _split_blobs(image: np.ndarray):
    """(number of 8-connected dark blobs, circle mask = largest blob, arrow mask = the rest)."""
    dark = image < 128
    blobs, count = ndimage.label(dark, structure=EIGHT_CONNECTED)
    sizes = np.bincount(blobs.ravel())[1:]
    circle = blobs == int(np.argmax(sizes)) + 1
    return count, circle, dark & ~circle


def _pixel_centres(mask: np.ndarray) -> np.ndarray:
    rows, cols = np.nonzero(mask)
    return np.stack([cols + 0.5, rows + 0.5], axis=1)


def _estimate_from_pixels(image: np.ndarray):
    """Circle centre and radius, arrow centre and direction, from the drawn pixels alone."""
    _, circle, arrow = _split_blobs(image)
    disk = _pixel_centres(circle)
    circle_center = disk.mean(axis=0)
    radius = math.sqrt(len(disk) / math.pi)
    points = _pixel_centres(arrow)
    mean = points.mean(axis=0)
    axis = np.linalg.eigh(np.cov((points - mean).T))[1][:, -1]
    along = (points - mean) @ axis
    across = np.abs((points - mean) @ np.array([-axis[1], axis[0]]))
    middle = (along.min() + along.max()) / 2
    # The head strokes spread sideways, so the wide end of the blob is the tip.
    if np.sum((along - middle) * across) < 0:
        axis = -axis
    # The shaft centre is midway between the blob's two ends along the axis.
    along = (points - mean) @ axis
    arrow_center = mean + axis * (along.min() + along.max()) / 2
    return circle_center, radius, arrow_center, math.atan2(axis[1], axis[0])


def test_same_inputs_give_identical_bytes():
    rng = np.random.default_rng(11)
    for resolution, scale in SETTINGS:
        seed, index = (int(v) for v in rng.integers(0, 10**6, size=2))
        first, label, geometry = render_sample(seed, index, resolution, scale)
        second, label_again, geometry_again = render_sample(seed, index, resolution, scale)
        assert first.tobytes() == second.tobytes()
        assert label == label_again and geometry == geometry_again
        assert sample_geometry(seed, index, resolution, scale) == geometry


def test_index_seed_and_resolution_change_the_picture():
    rng = np.random.default_rng(12)
    seed, index = (int(v) for v in rng.integers(0, 10**6, size=2))
    base, _, _ = render_sample(seed, index, 96, 0.5)
    assert not np.array_equal(base, render_sample(seed, index + 1, 96, 0.5)[0])
    assert not np.array_equal(base, render_sample(seed + 1, index, 96, 0.5)[0])
    larger, _, _ = render_sample(seed, index, 192, 0.5)
    assert larger.shape == (192, 192)
    # Not the same layout stretched: the geometry stream depends on the resolution.
    centres = [sample_geometry(seed, index, s, 0.5)["circle_center"] for s in (96, 192)]
    assert not np.allclose(np.asarray(centres[1]) - 15, 2 * (np.asarray(centres[0]) - 15))
    pictures = {render_sample(seed, i, 96, 0.5)[0].tobytes() for i in range(50)}
    assert len(pictures) == 50


@pytest.mark.parametrize(("resolution", "scale"), SETTINGS)
def test_value_range_and_shape(resolution: int, scale: float):
    for image, _, geometry in _samples(resolution, scale, 40, stream=13):
        assert image.dtype == np.uint8 and image.shape == (resolution, resolution)
        assert set(np.unique(image).tolist()) == {0, 255}
        dark = int((image == 0).sum())
        # At least the disk (minus its rim), at most a small part of the picture.
        assert dark >= math.pi * (geometry["radius"] - 1) ** 2
        assert dark < 0.25 * resolution**2


@pytest.mark.parametrize(("resolution", "scale"), SETTINGS)
def test_label_follows_from_geometry(resolution: int, scale: float):
    border = 30 * scale
    for _, label, geometry in _samples(resolution, scale, 300, stream=14):
        radius = geometry["radius"]
        distance = _half_line_distance(
            geometry["arrow_center"], geometry["angle"], geometry["circle_center"]
        )
        assert geometry["ray_distance"] == pytest.approx(distance, abs=1e-9)
        assert label == geometry["label"]
        if label == 1:
            assert distance <= radius / 1.2 + 1e-9
        else:
            assert distance >= 1.2 * radius - 1e-9
        # Settings: paper pixels times scale, strokes never below 1 px.
        assert 15 * scale <= radius <= 30 * scale
        assert 15 * scale <= geometry["length"] <= 30 * scale
        assert max(1.0, 2 * scale) <= geometry["width"] <= max(1.0, 3 * scale)
        for centre in (geometry["arrow_center"], geometry["circle_center"]):
            assert all(border <= c <= resolution - border for c in centre)
        # Stored end points agree with centre / angle / length.
        (tail, tip), (_, head_a), (_, head_b) = _segments(geometry)
        np.testing.assert_allclose(geometry["tail"], tail, atol=1e-9)
        np.testing.assert_allclose(geometry["tip"], tip, atol=1e-9)
        np.testing.assert_allclose(geometry["head_ends"], [head_a, head_b], atol=1e-9)
        # Circle and arrow never overlap: every arrow point is within length/2 of its centre.
        gap = np.hypot(*np.subtract(geometry["circle_center"], geometry["arrow_center"]))
        assert gap >= radius + geometry["length"] / 2 + geometry["width"] / 2 + 2 - 1e-9


@pytest.mark.parametrize(("resolution", "scale"), SETTINGS)
def test_drawn_circle_matches_geometry(resolution: int, scale: float):
    for image, _, geometry in _samples(resolution, scale, 150, stream=15):
        count, circle, _ = _split_blobs(image)
        assert count == 2
        cx, cy = geometry["circle_center"]
        radius = geometry["radius"]
        assert circle[int(cy), int(cx)]
        disk = _pixel_centres(circle)
        distances = np.hypot(disk[:, 0] - cx, disk[:, 1] - cy)
        assert distances.max() <= radius + 1e-9
        np.testing.assert_allclose(disk.mean(axis=0), [cx, cy], atol=0.3)
        assert math.sqrt(len(disk) / math.pi) == pytest.approx(radius, abs=0.5)
        # Filled: every pixel centre inside the circle is black.
        rows, cols = np.mgrid[0:resolution, 0:resolution]
        inside = np.hypot(cols + 0.5 - cx, rows + 0.5 - cy) <= radius - 1e-6
        assert circle[inside].all()


@pytest.mark.parametrize(("resolution", "scale"), SETTINGS)
def test_drawn_arrow_lies_on_shaft_and_head(resolution: int, scale: float):
    for image, _, geometry in _samples(resolution, scale, 150, stream=16):
        _, _, arrow = _split_blobs(image)
        points = _pixel_centres(arrow)
        segments = _segments(geometry)
        nearest = np.min([_segment_distance(points, *s) for s in segments], axis=0)
        assert nearest.max() <= geometry["width"] / 2 + 1e-9
        for start, end in segments:
            steps = np.linspace(0.0, 1.0, 25)[:, None]
            along = start + steps * (end - start)
            gaps = np.linalg.norm(along[:, None, :] - points[None, :, :], axis=2).min(axis=1)
            assert gaps.max() <= 1.0


@pytest.mark.parametrize(
    ("resolution", "scale", "min_agreement"),
    [(96, 0.5, 0.97), (192, 0.5, 0.97), (192, 1.0, 0.99), (384, 1.0, 0.99)],
)
def test_label_recovered_from_pixels(resolution: int, scale: float, min_agreement: float):
    agree = 0
    count = 200
    for image, label, geometry in _samples(resolution, scale, count, stream=17):
        circle_center, radius, arrow_center, angle = _estimate_from_pixels(image)
        # The head is found on the right end and the axis is close to the true one.
        error = abs(math.remainder(angle - geometry["angle"], 2 * math.pi))
        assert error < math.radians(10)
        assert np.hypot(*(arrow_center - np.asarray(geometry["arrow_center"]))) < 1.0
        distance = _half_line_distance(arrow_center, angle, circle_center)
        # r lies between the thresholds r/1.2 and 1.2·r.
        agree += int(distance < radius) == label
    assert agree / count >= min_agreement


@pytest.mark.parametrize(("resolution", "scale"), [(96, 0.5), (192, 0.5)])
def test_class_balance(resolution: int, scale: float):
    labels = [label for _, label, _ in _samples(resolution, scale, 2000, stream=18)]
    assert abs(np.mean(labels) - 0.5) <= 0.04


def test_extrapolation_keeps_object_size_and_spreads_positions():
    train = [sample_geometry(TEST_SEED, i, 96, 0.5) for i in range(300)]
    extra = [sample_geometry(EXTRAPOLATION_SEED, i, 192, 0.5) for i in range(300)]
    for key in ("radius", "length"):
        for geometries in (train, extra):
            values = np.array([g[key] for g in geometries])
            assert values.min() >= 7.5 and values.max() <= 15.0
            assert values.max() - values.min() > 5.0
    far = max(max(g["circle_center"] + g["arrow_center"]) for g in extra)
    assert far > 150
    gaps = [np.hypot(*np.subtract(g["circle_center"], g["arrow_center"])) for g in extra]
    assert max(gaps) > 96


def test_invalid_arguments_raise_value_error():
    rng = np.random.default_rng(19)
    seed = int(rng.integers(0, 1000))
    with pytest.raises(ValueError, match="seed"):
        render_sample(-1, 0)
    with pytest.raises(ValueError, match="index"):
        render_sample(seed, -3)
    with pytest.raises(ValueError, match="resolution"):
        render_sample(seed, 0, min_resolution(0.5) - 1, 0.5)
    with pytest.raises(ValueError, match="resolution"):
        render_sample(seed, 0, 96, 1.0)
    with pytest.raises(ValueError, match="resolution"):
        render_sample(seed, 0, 96.0, 0.5)
    for scale in (0.1, float("nan"), "0.5"):
        with pytest.raises(ValueError, match="scale"):
            render_sample(seed, 0, 96, scale)
    with pytest.raises(ValueError, match="num_samples"):
        ArrowPointingDataset(-1)
    with pytest.raises(ValueError, match="channels"):
        ArrowPointingDataset(4, channels=2)
    with pytest.raises(ValueError, match="transform"):
        ArrowPointingDataset(4, transform="flip")
    with pytest.raises(ValueError, match="split"):
        make_split("validation")


def test_dataset_items_match_render_sample():
    seed = int(np.random.default_rng(20).integers(0, 10**6))
    dataset = ArrowPointingDataset(7, resolution=96, seed=seed)
    assert len(dataset) == 7
    for index in range(7):
        image, label = dataset[index]
        expected, expected_label, _ = render_sample(seed, index, 96, 0.5)
        assert image.dtype == torch.float32 and image.shape == (3, 96, 96)
        assert set(image.unique().tolist()) == {0.0, 1.0}
        for channel in image:
            assert torch.equal(channel, torch.from_numpy(expected).float() / 255)
        assert isinstance(label, int) and label == expected_label
    assert torch.equal(dataset[-1][0], dataset[6][0])
    assert torch.equal(dataset[np.int64(3)][0], dataset[3][0])
    with pytest.raises(IndexError):
        dataset[7]
    with pytest.raises(IndexError):
        dataset[-8]


def test_dataset_channels_transform_and_loader():
    seed = int(np.random.default_rng(21).integers(0, 10**6))
    gray = ArrowPointingDataset(5, resolution=192, seed=seed, scale=1.0, channels=1)
    image, label = gray[2]
    assert image.shape == (1, 192, 192)
    expected, expected_label, _ = render_sample(seed, 2, 192, 1.0)
    assert torch.equal(image[0], torch.from_numpy(expected).float() / 255)
    assert label == expected_label
    flipped = ArrowPointingDataset(
        5, resolution=192, seed=seed, scale=1.0, channels=1, transform=lambda x: 1.0 - x
    )
    assert torch.equal(flipped[2][0], 1.0 - image)
    loader = torch.utils.data.DataLoader(ArrowPointingDataset(6, seed=seed), batch_size=4)
    images, labels = next(iter(loader))
    assert images.shape == (4, 3, 96, 96) and labels.shape == (4,)
    assert labels.tolist() == [render_sample(seed, i)[1] for i in range(4)]


def test_standard_splits():
    assert split_resolutions(0.5) == (96, 192) and split_resolutions(1.0) == (192, 384)
    test, extra = make_split("test"), make_split("extrapolation")
    assert (len(test), test.resolution, test.seed) == (TEST_SIZE, 96, TEST_SEED)
    assert (len(extra), extra.resolution) == (EXTRAPOLATION_SIZE, 192)
    assert extra.seed == EXTRAPOLATION_SEED
    assert TEST_SIZE == EXTRAPOLATION_SIZE == 10_240
    train = make_split("train")
    assert (len(train), train.seed) == (TRAIN_SIZE, TRAIN_SEED)
    assert len({TRAIN_SEED, TEST_SEED, EXTRAPOLATION_SEED}) == 3
    paper = make_split("extrapolation", num_samples=3, scale=1.0, channels=1)
    assert len(paper) == 3 and paper[0][0].shape == (1, 384, 384)
    assert not torch.equal(train[0][0], test[0][0])


def _flip_and_shift(image: torch.Tensor) -> torch.Tensor:
    """A transform whose result depends on every pixel value and channel."""
    return 2.0 * (1.0 - image) - 0.25 * torch.arange(image.shape[0]).view(-1, 1, 1)


@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("transform", [None, _flip_and_shift])
def test_cached_dataset_serves_the_same_items(channels: int, transform) -> None:
    seed = int(np.random.default_rng(22).integers(0, 10**6))
    common = {"resolution": 96, "seed": seed, "channels": channels, "transform": transform}
    plain = ArrowPointingDataset(6, **common)
    cached = ArrowPointingDataset(6, cache=True, **common)
    assert not plain.cached and cached.cached
    assert len(cached) == len(plain) == 6
    for index in (0, 2, 5, -1, -6):
        image, label = cached[index]
        expected, expected_label = plain[index]
        assert image.dtype == torch.float32 and image.shape == (channels, 96, 96)
        assert torch.equal(image, expected)
        assert isinstance(label, int) and label == expected_label
    raw, raw_label, _ = render_sample(seed, 5, 96, 0.5)
    gray = torch.from_numpy(raw).float() / 255
    last = gray.repeat(channels, 1, 1)
    if transform is not None:
        last = transform(last)
    assert torch.equal(cached[-1][0], last) and cached[-1][1] == raw_label
    with pytest.raises(IndexError):
        cached[6]
    with pytest.raises(IndexError):
        cached[-7]


def test_make_split_cache_matches_uncached() -> None:
    plain = make_split("extrapolation", num_samples=3, channels=1)
    cached = make_split("extrapolation", num_samples=3, channels=1, cache=True)
    assert cached.cached and not plain.cached
    assert (cached.seed, cached.resolution) == (EXTRAPOLATION_SEED, 192)
    for index in range(3):
        assert torch.equal(cached[index][0], plain[index][0])
        assert cached[index][1] == plain[index][1]


def test_render_images_in_uneven_chunks_over_processes(monkeypatch: pytest.MonkeyPatch) -> None:
    seed = int(np.random.default_rng(23).integers(0, 10**6))
    pools: list[int] = []

    class RecordingPool(arrows.ProcessPoolExecutor):
        def __init__(self, max_workers: int, **kwargs) -> None:
            pools.append(max_workers)
            super().__init__(max_workers, **kwargs)

    monkeypatch.setattr(arrows, "ProcessPoolExecutor", RecordingPool)
    # Chunks [0, 5), [5, 10), [10, 13) in the parent; workers re-import the module unpatched.
    monkeypatch.setattr(arrows, "_RENDER_CHUNK", 5)
    serial_images, serial_labels = render_images(seed, 13, 96, 0.5, processes=1)
    assert pools == []
    images, labels = render_images(seed, 13, 96, 0.5, processes=2)
    assert pools == [2]
    assert images.dtype == np.uint8 and images.shape == (13, 96, 96)
    assert labels.dtype == np.int64 and labels.shape == (13,)
    assert np.array_equal(images, serial_images) and np.array_equal(labels, serial_labels)
    for index in range(13):
        expected, expected_label, _ = render_sample(seed, index, 96, 0.5)
        assert np.array_equal(images[index], expected)
        assert labels[index] == expected_label
    # One chunk is rendered in this process whatever `processes` says.
    monkeypatch.setattr(arrows, "_RENDER_CHUNK", 2_000)
    single_images, single_labels = render_images(seed, 13, 96, 0.5, processes=4)
    assert pools == [2]
    assert np.array_equal(single_images, images) and np.array_equal(single_labels, labels)


def test_render_images_of_nothing() -> None:
    for resolution, scale in ((96, 0.5), (384, 1.0)):
        images, labels = render_images(3, 0, resolution, scale)
        assert images.dtype == np.uint8 and images.shape == (0, resolution, resolution)
        assert labels.dtype == np.int64 and labels.shape == (0,)
    empty = ArrowPointingDataset(0, cache=True)
    assert empty.cached and len(empty) == 0
    with pytest.raises(IndexError):
        empty[0]


@pytest.mark.parametrize(
    ("args", "match"),
    [
        ((-1, 4), "seed"),
        ((1.0, 4), "seed"),
        ((0, -1), "num_samples"),
        ((0, 4.0), "num_samples"),
        ((0, True), "num_samples"),
        ((0, 4, 40, 0.5), "resolution"),
        ((0, 4, 96, 1.0), "resolution"),
        ((0, 4, 96, 0.1), "scale"),
        ((0, 4, 96, float("inf")), "scale"),
        ((0, 4, 96, 0.5, 0), "processes"),
        ((0, 4, 96, 0.5, 1.5), "processes"),
    ],
)
def test_render_images_rejects_bad_arguments(args: tuple, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        render_images(*args)


def test_cached_dataset_checks_arguments_before_rendering() -> None:
    with pytest.raises(ValueError, match="num_samples"):
        ArrowPointingDataset(-1, cache=True)
    with pytest.raises(ValueError, match="resolution"):
        ArrowPointingDataset(4, resolution=40, cache=True)
    with pytest.raises(ValueError, match="channels"):
        make_split("test", num_samples=4, channels=2, cache=True)
