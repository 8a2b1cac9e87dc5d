"""Reference sets: the few annotated images a part model learns from.

Layout of a reference-set folder (local path or fsspec URL)::

    images/    RGB images (.png, .jpg, .jpeg); RGBA and greyscale are converted to RGB
    masks/     label maps with the same file stem as their image: single-channel PNG (values 0..P-1; a
               1-bit PNG gives labels 0 and 1) or .npy integer arrays of shape (H, W)
    parts.txt  part names, one per line, in class order, ``background`` first

Images and masks are paired by file stem (not by sort position, so a missing file is reported instead of
silently shifting every pair). Every problem raises :class:`ReferenceSetError` with one line naming the file;
images larger than Pillow's decompression-bomb limit (``Image.MAX_IMAGE_PIXELS``) are refused before they are
decoded. A part of ``parts.txt`` that no mask contains is logged as a warning (the model cannot learn it).
"""

from __future__ import annotations

import io
import logging
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import PurePosixPath

import fsspec
import numpy as np
from PIL import Image, UnidentifiedImageError

from smite_ops.errors import InputError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
MASK_SUFFIXES = (".png", ".npy")
_MASK_MODES = ("1", "L", "P", "I", "I;16")

logger = logging.getLogger(__name__)


class ReferenceSetError(InputError):
    """A reference set is malformed; the message names the file and the problem."""


@dataclass(frozen=True)
class ReferenceSet:
    """Reference images with their label maps.

    Attributes:
        root: the folder it was read from.
        part_names: class names in order, ``background`` first; ``P = len(part_names)``.
        stems: file stem of each pair, sorted.
        images: per pair an ``(H, W, 3)`` uint8 RGB array.
        masks: per pair an ``(H, W)`` uint8 label map with values in ``0..P-1``.
    """

    root: str
    part_names: list[str]
    stems: list[str]
    images: list[np.ndarray]
    masks: list[np.ndarray]

    @property
    def num_parts(self) -> int:
        return len(self.part_names)

    def __len__(self) -> int:
        return len(self.stems)


def read_part_names(fs: fsspec.AbstractFileSystem, path: str) -> list[str]:
    """Read ``parts.txt``: one part name per line, blank lines ignored, ``background`` first."""
    try:
        text = fs.cat_file(path).decode("utf-8")
    except FileNotFoundError:
        raise ReferenceSetError(f"{path}: parts.txt not found (one part name per line, background first)") from None
    except UnicodeDecodeError:
        raise ReferenceSetError(f"{path}: not UTF-8 text") from None
    names = [line.strip() for line in text.splitlines() if line.strip()]
    if len(names) < 2:
        raise ReferenceSetError(f"{path}: needs background and at least one part, found {names}")
    if names[0] != "background":
        raise ReferenceSetError(f"{path}: the first part must be 'background', found {names[0]!r}")
    if len(set(names)) != len(names):
        raise ReferenceSetError(f"{path}: duplicate part names in {names}")
    return names


def _files_by_stem(fs: fsspec.AbstractFileSystem, folder: str, suffixes: tuple[str, ...]) -> dict[str, str]:
    if not fs.isdir(folder):
        raise ReferenceSetError(f"{folder}: folder not found")
    found: dict[str, str] = {}
    for path in sorted(fs.ls(folder, detail=False)):
        name = PurePosixPath(path)
        if name.suffix.lower() not in suffixes:
            continue
        if name.stem in found:
            raise ReferenceSetError(f"{path}: two files share the stem {name.stem!r} ({found[name.stem]})")
        found[name.stem] = path
    return found


@contextmanager
def _opened_image(data: bytes, path: str) -> Iterator[Image.Image]:
    """Open PNG/JPEG bytes with Pillow; an image over its pixel limit is refused before decoding."""
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            with Image.open(io.BytesIO(data)) as image:
                yield image
        except (Image.DecompressionBombError, Image.DecompressionBombWarning):
            raise ReferenceSetError(
                f"{path}: image too large (over {Image.MAX_IMAGE_PIXELS} pixels, a possible decompression bomb)"
            ) from None


def _read_image(fs: fsspec.AbstractFileSystem, path: str) -> np.ndarray:
    try:
        with _opened_image(fs.cat_file(path), path) as image:
            return np.asarray(image.convert("RGB"))
    except (UnidentifiedImageError, OSError) as err:
        raise ReferenceSetError(f"{path}: unreadable image ({err.__class__.__name__})") from None


def _read_mask(fs: fsspec.AbstractFileSystem, path: str) -> np.ndarray:
    data = fs.cat_file(path)
    try:
        if path.lower().endswith(".npy"):
            mask = np.load(io.BytesIO(data), allow_pickle=False)
        else:
            with _opened_image(data, path) as image:
                if image.mode not in _MASK_MODES:
                    raise ReferenceSetError(f"{path}: mask must be a single-channel label map, got mode {image.mode}")
                mask = np.asarray(image)
                mask = mask.astype(np.uint8) if mask.dtype == bool else mask  # a 1-bit PNG reads as bool
    except (UnidentifiedImageError, OSError, ValueError) as err:
        if isinstance(err, ReferenceSetError):
            raise
        raise ReferenceSetError(f"{path}: unreadable mask ({err.__class__.__name__})") from None
    if mask.ndim != 2 or not np.issubdtype(mask.dtype, np.integer):
        raise ReferenceSetError(f"{path}: mask must be a 2-D integer label map, got {mask.dtype} {mask.shape}")
    if mask.size and mask.min() < 0:
        raise ReferenceSetError(f"{path}: negative label {int(mask.min())}")
    return mask


def load_reference_set(root: str) -> ReferenceSet:
    """Read and validate a reference set folder (see the module docstring for the layout).

    Raises:
        ReferenceSetError: unpaired files, image/mask size mismatch, label values >= P, an empty set,
            an unreadable image or mask, or a malformed ``parts.txt``.
    """
    fs, base = fsspec.core.url_to_fs(str(root))
    base = base.rstrip("/")
    if not fs.isdir(base):
        raise ReferenceSetError(f"{root}: reference set folder not found")
    part_names = read_part_names(fs, f"{base}/parts.txt")
    images = _files_by_stem(fs, f"{base}/images", IMAGE_SUFFIXES)
    masks = _files_by_stem(fs, f"{base}/masks", MASK_SUFFIXES)
    if not images:
        raise ReferenceSetError(f"{base}/images: no images ({', '.join(IMAGE_SUFFIXES)})")
    if unmasked := sorted(images.keys() - masks.keys()):
        raise ReferenceSetError(f"{images[unmasked[0]]}: no mask with the same stem in {base}/masks")
    if orphans := sorted(masks.keys() - images.keys()):
        raise ReferenceSetError(f"{masks[orphans[0]]}: no image with the same stem in {base}/images")

    stems = sorted(images)
    loaded_images, loaded_masks = [], []
    for stem in stems:
        image = _read_image(fs, images[stem])
        mask = _read_mask(fs, masks[stem])
        if mask.shape != image.shape[:2]:
            raise ReferenceSetError(
                f"{masks[stem]}: mask size {mask.shape[1]}x{mask.shape[0]} differs from "
                f"image size {image.shape[1]}x{image.shape[0]}"
            )
        if mask.max() >= len(part_names):
            raise ReferenceSetError(
                f"{masks[stem]}: label {int(mask.max())} >= number of parts {len(part_names)} in parts.txt"
            )
        loaded_images.append(image)
        loaded_masks.append(mask.astype(np.uint8))
    _warn_absent_parts(f"{base}/parts.txt", part_names, loaded_masks)
    return ReferenceSet(
        root=str(root), part_names=part_names, stems=stems, images=loaded_images, masks=loaded_masks
    )


def _warn_absent_parts(parts_path: str, part_names: list[str], masks: list[np.ndarray]) -> None:
    """Log a warning for every part of ``parts.txt`` that no mask contains."""
    present = np.zeros(len(part_names), dtype=bool)
    for mask in masks:
        present[np.unique(mask)] = True
    for label in np.flatnonzero(~present):
        logger.warning(
            "%s: part %r (label %d) appears in no mask; the model cannot learn it", parts_path, part_names[label], label
        )


def write_reference_set(root: str, part_names: list[str], images: list[np.ndarray], masks: list[np.ndarray]) -> None:
    """Write images and label maps in the reference-set layout (stems ``000``, ``001``, ...).

    Args:
        root: destination folder (local path or fsspec URL); created if missing.
        part_names: class names, ``background`` first.
        images: ``(H, W, 3)`` uint8 RGB arrays.
        masks: ``(H, W)`` integer label maps with values ``< len(part_names)``.
    """
    fs, base = fsspec.core.url_to_fs(str(root))
    base = base.rstrip("/")
    fs.makedirs(f"{base}/images", exist_ok=True)
    fs.makedirs(f"{base}/masks", exist_ok=True)
    fs.pipe_file(f"{base}/parts.txt", ("\n".join(part_names) + "\n").encode())
    for index, (image, mask) in enumerate(zip(images, masks, strict=True)):
        for folder, array in (("images", image), ("masks", np.asarray(mask, dtype=np.uint8))):
            buffer = io.BytesIO()
            Image.fromarray(array).save(buffer, format="PNG")
            fs.pipe_file(f"{base}/{folder}/{index:03d}.png", buffer.getvalue())
