"""Reference-set loading: round trips and one clear error per kind of bad input."""

import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pipeline.io.references import ReferenceSetError, load_reference_set, write_reference_set

PARTS = ["background", "body", "wheel"]


def _sample(seed: int, size: tuple[int, int] = (24, 32)) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    image = rng.integers(0, 256, size=(*size, 3), dtype=np.uint8)
    mask = rng.integers(0, len(PARTS), size=size, dtype=np.uint8)
    return image, mask


@pytest.fixture
def refs(tmp_path: Path) -> Path:
    root = tmp_path / "refs"
    images, masks = zip(*(_sample(seed) for seed in range(3)), strict=True)
    write_reference_set(str(root), PARTS, list(images), list(masks))
    return root


def test_round_trip_gives_the_same_label_maps(refs: Path) -> None:
    loaded = load_reference_set(str(refs))
    assert loaded.part_names == PARTS and loaded.num_parts == 3 and len(loaded) == 3
    assert loaded.stems == ["000", "001", "002"]
    for index in range(3):
        image, mask = _sample(index)
        np.testing.assert_array_equal(loaded.images[index], image)
        np.testing.assert_array_equal(loaded.masks[index], mask)


def test_fsspec_memory_url_and_npy_masks() -> None:
    image, mask = _sample(7)
    write_reference_set("memory://refs-npy", PARTS, [image], [mask])
    import fsspec

    fs = fsspec.filesystem("memory")
    fs.rm("/refs-npy/masks/000.png")
    with fs.open("/refs-npy/masks/000.npy", "wb") as handle:
        np.save(handle, mask.astype(np.int64))
    loaded = load_reference_set("memory://refs-npy")
    np.testing.assert_array_equal(loaded.masks[0], mask)


def test_rgba_and_jpeg_images_are_converted_to_rgb(refs: Path) -> None:
    rgba = np.dstack([_sample(0)[0], np.full((24, 32), 128, np.uint8)])
    Image.fromarray(rgba, "RGBA").save(refs / "images" / "000.png")
    (refs / "images" / "001.png").unlink()
    Image.fromarray(_sample(1)[0]).save(refs / "images" / "001.jpg", quality=95)
    loaded = load_reference_set(str(refs))
    assert all(image.shape == (24, 32, 3) for image in loaded.images)
    np.testing.assert_array_equal(loaded.images[0], _sample(0)[0])


def _expect(root: Path, culprit: str, problem: str) -> None:
    with pytest.raises(ReferenceSetError) as info:
        load_reference_set(str(root))
    message = str(info.value)
    assert culprit in message and problem in message, message
    assert "\n" not in message


def test_image_without_mask(refs: Path) -> None:
    (refs / "masks" / "001.png").unlink()
    _expect(refs, "images/001.png", "no mask with the same stem")


def test_mask_without_image(refs: Path) -> None:
    (refs / "images" / "002.png").unlink()
    _expect(refs, "masks/002.png", "no image with the same stem")


def test_size_mismatch(refs: Path) -> None:
    Image.fromarray(np.zeros((10, 10), np.uint8)).save(refs / "masks" / "001.png")
    _expect(refs, "masks/001.png", "mask size 10x10 differs from image size 32x24")


def test_label_out_of_range(refs: Path) -> None:
    Image.fromarray(np.full((24, 32), 3, np.uint8)).save(refs / "masks" / "002.png")
    _expect(refs, "masks/002.png", "label 3 >= number of parts 3")


def test_colour_mask_is_rejected(refs: Path) -> None:
    Image.fromarray(np.zeros((24, 32, 3), np.uint8)).save(refs / "masks" / "000.png")
    _expect(refs, "masks/000.png", "single-channel")


def test_unreadable_image(refs: Path) -> None:
    (refs / "images" / "001.png").write_bytes(b"not an image at all")
    _expect(refs, "images/001.png", "unreadable image")


def test_empty_set(refs: Path) -> None:
    for path in (refs / "images").iterdir():
        path.unlink()
    _expect(refs, "images", "no images")


@pytest.mark.parametrize(
    ("text", "problem"),
    [("body\nbackground\n", "first part must be 'background'"), ("background\n", "at least one part"),
     ("background\nbody\nbody\n", "duplicate part names")],
)
def test_bad_parts_file(refs: Path, text: str, problem: str) -> None:
    (refs / "parts.txt").write_text(text)
    _expect(refs, "parts.txt", problem)


def test_missing_parts_file_and_folder(refs: Path, tmp_path: Path) -> None:
    (refs / "parts.txt").unlink()
    _expect(refs, "parts.txt", "not found")
    _expect(tmp_path / "nowhere", "nowhere", "reference set folder not found")


def test_one_bit_png_masks_give_labels_0_and_1(refs: Path) -> None:
    bits = np.zeros((24, 32), dtype=bool)
    bits[5:15, 8:20] = True
    Image.fromarray(bits).convert("1").save(refs / "masks" / "001.png")
    assert Image.open(refs / "masks" / "001.png").mode == "1"
    loaded = load_reference_set(str(refs))
    np.testing.assert_array_equal(loaded.masks[1], bits.astype(np.uint8))


def _png_header_claiming(path: Path, width: int, height: int) -> None:
    """A PNG whose header claims ``width x height`` pixels (mode L) with one tiny compressed row of data."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 64))
                     + chunk(b"IEND", b""))


@pytest.mark.parametrize("folder", ["images", "masks"])
def test_decompression_bomb_is_refused_in_one_line(refs: Path, folder: str) -> None:
    _png_header_claiming(refs / folder / "001.png", 14000, 14000)
    _expect(refs, f"{folder}/001.png", "image too large (over 89478485 pixels, a possible decompression bomb)")


def test_a_part_absent_from_every_mask_is_warned_about(refs: Path, caplog: pytest.LogCaptureFixture) -> None:
    (refs / "parts.txt").write_text("background\nbody\nwheel\nmirror\n")
    with caplog.at_level("WARNING", logger="pipeline.io.references"):
        loaded = load_reference_set(str(refs))
    assert loaded.num_parts == 4
    assert [record.getMessage() for record in caplog.records] == [
        f"{refs}/parts.txt: part 'mirror' (label 3) appears in no mask; the model cannot learn it"
    ]
