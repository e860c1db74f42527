"""Any single-digit image -> MNIST-style 28x28, prepared the way MNIST itself was prepared.

LeCun, Cortes and Burges describe MNIST: NIST's binary digits were "size normalized to fit in a
20x20 pixel box while preserving their aspect ratio", anti-aliased (hence the grey levels), then
"centered in a 28x28 image by computing the center of mass of the pixels, and translating the
image so as to position this point at the center of the 28x28 field". A model trained on MNIST is
right 99% of the time on images prepared that way and often wrong on anything else, so every
image that enters digitlab from outside is converted here, once:

    load_image(source)       any common image file -> float32 grey in [0, 1], as it looks
    ink_map(grey)            -> ink bright on a dark ground, contrast-stretched, and the polarity
    center_digit(ink)        crop, fit 20x20, centre of mass to (14, 14), MNIST-like strokes
    to_mnist_style(source)   all three: (28, 28) uint8, ink bright, ready for Model.predict

Pixels that come as arrays, already MNIST-style (`Model.predict`, `predict(..., prepare=False)`, the
service's "pixels"), are not prepared but taken as they are, under one rule: `to_uint8_images` and
`to_uint8_digit`. One digit so given must not be blank, by the rule blank images are held to (`require_ink`).

Speed (`digitlab bench prepare`, one core of a shared 2-core AMD EPYC, OpenCV on one thread): a
decoded 16x16 USPS or 28x28 HwD-1000 digit is prepared in 0.26-0.29 ms at the median (2.4-3.8 and
0.6-1.2 ms at the 99th percentile: thick strokes are thinned, 30-40 passes over the working image),
one of the reader's candidates in 0.19-0.21 ms, a 280x280 canvas in 0.99 ms (1.4-1.55 before
its ground, polarity and faint ink were judged without shrinking, ranking or a disc:
`_even_at_full_size`, `_clear_polarity`, `_digit_crop`; 3.6 ms for the reference). That is 1.3-3.5
times faster in the mean than before 2026-12-06 (timed beside that code on 2,007 USPS, 1,000
HwD-1000, 1,000 canvas and 1,300 candidate digits), with the same pixels on every one of them:
`reference=True` keeps the computation as it was. Decoding a canvas's PNG adds 0.36-0.43 ms (zlib;
Pillow and OpenCV alike). The issue's 0.5 ms is not met for canvases: what is left is spread over a
dozen steps of 0.05-0.13 ms, and shrinking a canvas early (2x, to 0.53 ms) put 10.5% of pixels more
than one grey level off (300 canvases).
"""

from __future__ import annotations

import ctypes
import io
import math
import os
import re
import stat
import warnings
from typing import BinaryIO

import cv2
import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from .errors import ConfigError, DataError, DigitlabError

__all__ = [
    "ImageError",
    "ImageTooLargeError",
    "NotAnImageError",
    "PixelError",
    "load_image",
    "declared_size",
    "quiet_decoders",
    "ink_map",
    "plain_ink",
    "line_ink",
    "line_input",
    "center_digit",
    "to_mnist_style",
    "stroke_width",
    "to_uint8_images",
    "to_uint8_digit",
    "require_ink",
    "percentiles",
]

ImageSource = str | os.PathLike | bytes | bytearray | BinaryIO | Image.Image | np.ndarray

MAX_PIXELS = 40_000_000  # a 48-megapixel phone photo is larger: resize it; this stops decompression bombs
MAX_BYTES = 50_000_000
MIN_SIDE = 4  # fewer pixels than this across cannot hold a legible digit

MNIST_SIZE = 28
MNIST_BOX = 20  # the longer side of every digit, in pixels
# Measured on the 10,000 MNIST test digits (pixel index coordinates): the mean centre of mass is
# (row 13.99, column 14.01), spread 0.29 px (MNIST shifted by whole pixels).
MNIST_CENTER = 14.0
# Stroke width in MNIST pixels, measured with `stroke_width` on all 60,000 MNIST training digits,
# each upsampled 4x (bilinear) so that the outline follows the strokes, not the pixel grid:
# median 2.34, 10th percentile 1.70, 90th 3.25 (mean 2.43). Writers differ: the first 5,000 test
# digits measure 2.21 (median), the last 5,000 2.55. Upsampled 8x and binarised at 0.5, as
# `center_digit` sees its working image, the same digits measure within 0.03 px of these.
# Strokes outside the 10th-90th range are thickened or thinned to the median; others are left.
MNIST_STROKE_WIDTH = 2.34
MNIST_STROKE_RANGE = (1.70, 3.25)

INK_THRESHOLD = 0.3  # on the stretched ink map: a pixel at least this bright is part of a stroke
SPECK_FRACTION = 0.05  # ink components under this fraction of the largest one's area are specks
MIN_CONTRAST = 0.1  # ink must differ from the ground by this much (of black to white) to count
WORK_SCALE = 8  # strokes are binarised and reshaped at 8x the output resolution (a 160x160 box)
RESOLVED_STROKE = 3.0  # ...or finer still, so that no stroke gets thinner than 3 working pixels
# ...but never more than this many working pixels across the digit (51 per output pixel). Stroke
# shaping costs the working area times the dilation's diameter, and both grow as the strokes get
# thinner against the digit: a 17 KB JPEG whose header claims 20915x873 pixels (found by `digitlab
# bench fuzz`: strokes 1/3500 of the digit's length) took 157 s in one dilation at full resolution,
# a 6000x6000 photo of a 3-pixel pen line 12 s (3 s capped). Only strokes thinner than 1/340 of the
# digit are affected (binarised under 3 working pixels wide); a pen's are 1/10 to 1/100 of it.
MAX_WORK_BOX = 1024
MARGIN = 3  # output pixels kept around the digit's box: its anti-aliased edge and room to thicken
EXTREMES_FIRST = 4096  # `percentiles` of this many values or more look at the extremes' runs first


class ImageError(DataError):
    """An image that cannot be read, is too large or too small, or holds no digit."""


class ImageTooLargeError(ImageError):
    """An image over the limits: more bytes than max_bytes, or a header declaring more pixels
    than max_pixels (refused before decoding). The service answers 413."""


class NotAnImageError(ImageError):
    """Data that no image decoder recognises (a text file, an unknown format). The service answers 415."""


class PixelError(ImageError, ConfigError):
    """Pixels given as an array (not an image file) that no model can take: of the wrong shape, not
    numbers, or out of range. An ImageError, as any bad image is, and a ConfigError, as `Model.predict`
    has always called an array it cannot take. The service answers 422."""


# --- decoding -------------------------------------------------------------------------------------

# The formats digitlab reads: those README promises and `digitlab bench fuzz` feeds in (a phone's
# MPO, a JPEG with a second picture, opens as JPEG). Pillow would try some 40 more, and several
# decode what no header declares or raise what no caller expects: an ICO's or ICNS's embedded PNG
# (up to 179 MP behind a 256x256 directory entry: a 657 KB ICO took the service to 1,166 MB before
# its 413), a DDS with pixel-format flags 0 (NotImplementedError). Those are refused unopened.
FORMATS = ("PNG", "JPEG", "BMP", "GIF", "TIFF", "WEBP")
FORMAT_NAMES = "PNG, JPEG, BMP, GIF, TIFF or WebP"
# A TIFF tile is a block that libtiff allocates whole before it reads a pixel, whatever the image's
# own size: a 100x100 TIFF declaring one 32768x32768 tile took `digitlab predict` to 1,509 MB. Tiles
# come in multiples of 16 pixels and some writers use 256x256 whatever the size (tiffcp), so a tile
# may overhang its image by that much (256 KiB a band at most); a tile larger than that is refused.
TIFF_TILE_WIDTH, TIFF_TILE_LENGTH = 322, 323
TILE_ALIGN, SMALL_TILE = 16, 256


def quiet_decoders() -> None:
    """Keep Pillow's warnings and libtiff's error messages off stderr, process-wide: digitlab turns
    the failures they describe into its own one-line errors. For programs whose output is digitlab's
    (the CLI, the service it starts); a library leaves the choice to its caller. libtiff prints its
    errors itself ("ZIPDecode: Decoding error at scanline 0, ..." above `digitlab: error:`) unless
    told otherwise, and Pillow does not tell it: its handler is set to none in the copy Pillow loaded."""
    warnings.filterwarnings("ignore", module="PIL")
    try:
        with open("/proc/self/maps") as maps:  # Linux; elsewhere libtiff is left as it is
            libraries = {line.split()[-1] for line in maps if os.path.basename(line.split()[-1]).startswith("libtiff")}
    except OSError:
        return
    for library in sorted(libraries):
        try:
            for setter in ("TIFFSetErrorHandler", "TIFFSetWarningHandler"):
                function = getattr(ctypes.CDLL(library), setter)
                function.argtypes, function.restype = [ctypes.c_void_p], ctypes.c_void_p
                function(None)
        except (OSError, AttributeError):  # not a library ctypes can open, or without these functions
            continue


def load_image(source: ImageSource, *, max_pixels: int = MAX_PIXELS, max_bytes: int = MAX_BYTES) -> np.ndarray:
    """Decode an image into float32 grey (H, W) in [0, 1], as it looks: dark ink on paper stays dark.

    source: a path, the file's bytes, a binary file object, a PIL image, or a numpy array ((H, W),
    (H, W, 1|2|3|4) as grey, grey+alpha, RGB, RGBA; uint8, uint16, bool or float in [0, 1]).
    PNG, JPEG, BMP, GIF, TIFF or WebP (the first frame of an animation or a multi-page file), grey,
    RGB(A), palette, 8 or 16 bit; the EXIF orientation is applied. Files over `max_bytes`, images
    (or TIFF tiles) declaring more than `max_pixels` and tiles larger than their image are refused
    before they are decoded. A transparent image is flattened onto a ground its drawing contrasts
    with: black under white strokes, white under dark ones.
    """
    if isinstance(source, np.ndarray):
        grey, alpha = _array_channels(source)
    else:
        name = _name(source)
        image = _decode(_opened(source, name, max_bytes, max_pixels), name)
        grey, alpha = _pillow(lambda: _image_channels(image), name, "cannot be converted to grey")
    if min(grey.shape) < MIN_SIDE:
        raise ImageError(
            f"{_name(source)} is {grey.shape[1]}x{grey.shape[0]} pixels: too small to hold a digit "
            f"(at least {MIN_SIDE}x{MIN_SIDE})"
        )
    if alpha is not None and alpha.min() < alpha.max():
        grey = _composite(grey, alpha)
    return grey


def load_colour(source: ImageSource, *, max_pixels: int = MAX_PIXELS, max_bytes: int = MAX_BYTES) -> np.ndarray | None:
    """The image as (H, W, 3) uint8 RGB for showing it (annotations), with the same limits,
    checks and EXIF orientation as `load_image`; None where a colour view would mislead
    (transparent, 16-bit or float images: show `load_image`'s grey instead)."""
    if isinstance(source, np.ndarray):
        if source.ndim == 3 and source.shape[2] == 3 and source.dtype == np.uint8:
            return source
        return None
    name = _name(source)
    image = _decode(_opened(source, name, max_bytes, max_pixels), name)
    if image.mode not in ("RGB", "L", "P", "CMYK", "YCbCr", "1") or image.has_transparency_data:
        return None
    return _pillow(lambda: np.asarray(image.convert("RGB")), name, "cannot be converted to RGB")


def declared_size(source: ImageSource, *, max_bytes: int = MAX_BYTES, max_pixels: int = MAX_PIXELS) -> tuple[int, int]:
    """(width, height) as the image's header declares it (before the EXIF orientation turns it),
    read without decoding a pixel, after the checks `load_image` makes before it decodes: the
    same formats, limits and tile checks, and the same errors (ImageTooLargeError over the
    limits, NotAnImageError for data in no format digitlab reads, ImageError for the rest)."""
    if isinstance(source, np.ndarray):
        if source.ndim not in (2, 3):
            raise ImageError(f"an image array must be (H, W) or (H, W, 1|2|3|4), not {source.shape}")
        return int(source.shape[1]), int(source.shape[0])
    return _opened(source, _name(source), max_bytes, max_pixels).size


def _name(source) -> str:
    """How messages name the image: a path quoted as Python would (a newline in it stays on the
    line, as '\\n'), else 'the image'."""
    return repr(os.fsdecode(source)) if isinstance(source, (str, os.PathLike)) else "the image"


def _opened(source, name: str, max_bytes: int, max_pixels: int) -> Image.Image:
    """The image opened lazily (only its header parsed) and checked before anything is decoded."""
    image = source if isinstance(source, Image.Image) else _open(_read(source, name, max_bytes), name, max_pixels)
    _check_declared(image, max_pixels, name)
    return image


def _read(source, name: str, max_bytes: int) -> bytes:
    """The bytes of a path, a bytes object or a binary file: at most `max_bytes`, never empty."""
    if isinstance(source, (str, os.PathLike)):
        data = _read_file(source, name, max_bytes)
    elif isinstance(source, (bytes, bytearray, memoryview)):
        data = bytes(source)
    elif hasattr(source, "read"):
        try:
            data = source.read(max_bytes + 1)  # one byte more than allowed tells that there is more
        except OSError as err:
            raise ImageError(f"{name} could not be read: {err.strerror or err}") from err
        if isinstance(data, str):
            raise ImageError(f"{name} was opened in text mode: open image files with 'rb'")
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise ImageError(f"{name} is not a binary file: its read() gave {type(data).__name__}")
    else:
        raise TypeError(
            f"cannot read an image from {type(source).__name__}: give a path, bytes, a binary "
            "file, a PIL image or a numpy array"
        )
    if not data:
        raise ImageError(f"{name} is empty (0 bytes)")
    if len(data) > max_bytes:
        raise ImageTooLargeError(f"{name} is more than {max_bytes:,} bytes, the limit")
    return bytes(data)


def _read_file(path, name: str, max_bytes: int) -> bytes:
    """A regular file's first `max_bytes` + 1 bytes. Opened without blocking (a FIFO would wait
    for a writer), and refused unless it is a regular file: a directory, a pipe or a device.
    /proc files declare 0 bytes, so the size is checked as read, too."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except (FileNotFoundError, NotADirectoryError) as err:
        raise ImageError(f"{name}: no such file") from err
    except IsADirectoryError as err:
        raise ImageError(f"{name}: no such file (it is a directory)") from err
    except OSError as err:
        raise ImageError(f"{name} cannot be opened: {err.strerror or err}") from err
    status = os.fstat(fd)
    if not stat.S_ISREG(status.st_mode):
        os.close(fd)
        if stat.S_ISDIR(status.st_mode):
            raise ImageError(f"{name}: no such file (it is a directory)")
        raise ImageError(f"{name} is not a regular file (a pipe, socket or device): give an image file")
    with os.fdopen(fd, "rb", buffering=0) as file:
        if status.st_size > max_bytes:
            raise ImageTooLargeError(f"{name} is {status.st_size:,} bytes, more than the limit of {max_bytes:,}")
        # First the declared size and one byte (a read of n bytes allocates n first), then what more
        # comes, 64 KiB at a time.
        chunks, size, want = [], 0, min(status.st_size, max_bytes) + 1
        try:
            while size <= max_bytes:
                chunk = file.read(min(want, max_bytes + 1 - size))
                if not chunk:
                    break
                chunks.append(chunk)
                size, want = size + len(chunk), 1 << 16
        except OSError as err:  # /proc/self/mem: EIO at offset 0
            raise ImageError(f"{name} could not be read: {err.strerror or err}") from err
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def _open(data: bytes, name: str, max_pixels: int) -> Image.Image:
    """Open `data` lazily, in the formats digitlab reads only: only the header is parsed."""
    try:
        with warnings.catch_warnings():  # our own, lower pixel limit is checked next
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            return Image.open(io.BytesIO(data), formats=FORMATS)
    except Image.DecompressionBombError as err:  # Pillow's own limit, above ours: "Image size (N pixels) exceeds..."
        found = re.search(r"\((\d+) pixels\)", str(err))
        declared = f"{int(found.group(1)):,} pixels" if found else "too many pixels"
        raise ImageTooLargeError(
            f"{name} declares {declared}, more than the limit of {max_pixels:,}: resize it first"
        ) from err
    except UnidentifiedImageError as err:  # its message names only a BytesIO object
        other = _other_format(data)
        found = f"its format is {other}" if other else f"its first bytes are {data[:8]!r}"
        raise NotAnImageError(f"{name} is not an image digitlab reads ({FORMAT_NAMES}): {found}") from err
    except Exception as err:  # noqa: BLE001 -- a plugin on a forged header raises anything: struct.error, ...
        raise NotAnImageError(f"{name} is not an image digitlab reads ({FORMAT_NAMES}): {_reason(err)}") from err


def _other_format(data: bytes) -> str | None:
    """The format, outside FORMATS, that Pillow's signature checks see in `data`: 'ICO', 'DDS'...
    Only the checks run (on the 16 bytes Pillow gives them), never a decoder."""
    Image.init()
    for fmt in Image.ID:
        accept = Image.OPEN[fmt][1]
        try:
            if fmt not in FORMATS and accept is not None and accept(data[:16]):
                return "DIB (a BMP without its file header)" if fmt == "DIB" else fmt
        except Exception:  # noqa: BLE001,S112 -- a signature check that fails is a format it is not
            continue
    return None


def _reason(err: BaseException) -> str:
    """An exception as one line for a message: its text, else its type."""
    text = " ".join(str(err).split())
    return text or type(err).__name__


def _check_pixels(size: tuple[int, int], max_pixels: int, name: str, what: str = "is") -> None:
    """Refuse an image by the size its header declares, before any pixel is decoded."""
    width, height = size
    if width * height > max_pixels:
        raise ImageTooLargeError(
            f"{name} {what} {width}x{height} = {width * height:,} pixels, more than the limit "
            f"of {max_pixels:,}: resize it first"
        )


def _check_declared(image: Image.Image, max_pixels: int, name: str) -> None:
    """Refuse, before decoding, what the decoder would allocate beyond the limits: the image's
    (first frame's: the one decoded) declared size, blocks of it lying outside it, TIFF tiles
    larger than the image or than the pixel limit. Other frames are never decoded, nor parsed
    (seeking a GIF's or APNG's frame decodes the ones before it)."""
    width, height = image.size
    _check_pixels((width, height), max_pixels, name)
    for tile in image.tile or ():
        extents = tile[1]
        if extents is not None and (min(extents[:2]) < 0 or extents[2] > width or extents[3] > height):
            raise ImageError(
                f"{name} is damaged: it places pixels at {tuple(extents)}, outside its {width}x{height} image"
            )
    if image.format == "TIFF":
        tile_width, tile_length = image.tag_v2.get(TIFF_TILE_WIDTH), image.tag_v2.get(TIFF_TILE_LENGTH)
        if tile_width is None and tile_length is None:
            return
        if not (isinstance(tile_width, int) and isinstance(tile_length, int) and tile_width > 0 and tile_length > 0):
            raise ImageError(f"{name} is damaged: its tiles are {tile_width!r} by {tile_length!r} pixels")
        _check_pixels((tile_width, tile_length), max_pixels, name, "declares tiles of")
        allowed = [max(-(-side // TILE_ALIGN) * TILE_ALIGN, SMALL_TILE) for side in (width, height)]
        if tile_width > allowed[0] or tile_length > allowed[1]:
            raise ImageTooLargeError(
                f"{name} declares tiles of {tile_width}x{tile_length} pixels for a "
                f"{width}x{height} image: a tile larger than its image is refused"
            )


def _pillow(step, name: str, failure: str):
    """step() (a Pillow call on a file's pixels), with anything it raises as an ImageError naming
    the file: Pillow's decoders on damaged data raise more than OSError (struct.error, IndexError,
    ZeroDivisionError, NotImplementedError, MemoryError were seen)."""
    try:
        return step()
    except DigitlabError:
        raise
    except MemoryError as err:
        raise ImageTooLargeError(f"{name} {failure}: not enough memory") from err
    except Exception as err:  # noqa: BLE001 -- see above
        raise ImageError(f"{name} {failure}: {_reason(err)}") from err


def _decode(image: Image.Image, name: str) -> Image.Image:
    """Decode every pixel now (a damaged file fails here, not later) and apply the EXIF orientation."""
    _pillow(image.load, name, "is damaged or truncated")
    try:
        return ImageOps.exif_transpose(image)
    except Exception:  # noqa: BLE001 -- Pillow's EXIF parser on a damaged block raises struct.error and others
        # The pixels are whole; only the orientation is lost (a WebP whose EXIF is the 4 bytes 'II*\0',
        # found by `digitlab bench fuzz`, raised struct.error through predict and read).
        return image


def _luma(rgb: np.ndarray) -> np.ndarray:
    """Grey from RGB with ITU-R 601-2 weights, as Pillow's convert('L')."""
    return rgb[..., 0] * np.float32(0.299) + rgb[..., 1] * np.float32(0.587) + rgb[..., 2] * np.float32(0.114)


def _image_channels(image: Image.Image) -> tuple[np.ndarray, np.ndarray | None]:
    """(grey, alpha or None) of a decoded PIL image, both float32 in [0, 1]."""
    if image.mode.startswith("I;16"):
        return np.asarray(image, np.float32) / 65535, None
    if image.mode == "I":  # 32-bit integers: Pillow reads some 16-bit TIFF and PNG files so
        return np.clip(np.asarray(image, np.float32) / 65535, 0, 1), None
    if image.mode == "F":  # floats: taken as [0, 1] if they fit, else as 8-bit levels
        values = np.asarray(image, np.float32)
        return np.clip(values if values.max() <= 1 else values / 255, 0, 1), None
    if image.mode == "LAB":  # CIELAB (a TIFF can hold it): its L band is the lightness, the grey it looks.
        return np.asarray(image.getchannel("L"), np.float32) / 255, None  # (Pillow cannot convert LAB to L)
    if image.has_transparency_data:  # RGBA, LA, PA, or a palette or grey image with a transparent colour
        rgba = np.asarray(image.convert("RGBA"), np.float32) / 255
        return _luma(rgba), rgba[..., 3]
    return np.asarray(image.convert("L"), np.float32) / 255, None


def _array_channels(array: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
    """(grey, alpha or None) of a numpy image, both float32 in [0, 1]."""
    if array.dtype == np.uint8:
        values = array.astype(np.float32) / 255
    elif array.dtype == np.uint16:
        values = array.astype(np.float32) / 65535
    elif array.dtype == bool:
        values = array.astype(np.float32)
    elif np.issubdtype(array.dtype, np.floating):
        values = array.astype(np.float32)
        if not (np.isfinite(values).all() and values.min(initial=0) >= 0 and values.max(initial=0) <= 1):
            raise ImageError("a float image must hold values in [0, 1]")
    else:
        raise ImageError(f"an image array must be uint8, uint16, bool or float in [0, 1], not {array.dtype}")
    if values.ndim == 3 and values.shape[2] in (1, 2, 3, 4):
        channels = values.shape[2]
        grey = _luma(values) if channels >= 3 else values[..., 0]
        return grey, (values[..., -1] if channels in (2, 4) else None)
    if values.ndim != 2:
        raise ImageError(f"an image array must be (H, W) or (H, W, 1|2|3|4), not {array.shape}")
    return values, None


def _composite(grey: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """Flatten a transparent image onto a ground that its drawing contrasts with.

    A canvas drawing is strokes on a transparent ground, and what lies under the transparent
    pixels (often black) is meaningless: there the alpha channel is the drawing. So when most
    of the image is transparent, the visible pixels are the strokes, and the ground is black
    under light strokes and white under dark ones (white strokes on white would vanish). When
    most of it is opaque, it is a picture with transparent parts; they get its own ground.
    """
    if alpha.mean() < 0.5:
        stroke = float((alpha * grey).sum() / alpha.sum())
        ground = 0.0 if stroke > 0.5 else 1.0
    else:
        ground = float(np.median(grey[alpha > 0.5]))
    return (alpha * grey + (1 - alpha) * ground).astype(np.float32)


# --- ink --------------------------------------------------------------------------------------------


def ink_map(grey: np.ndarray, *, reference: bool = False) -> tuple[np.ndarray, str]:
    """Ink bright on a dark ground, contrast-stretched: (float32 (H, W) in [0, 1], polarity).

    The ground is what the border shows; the ink is whichever side of it the image reaches
    further: darker ("dark-on-light": pen on paper) or lighter ("light-on-dark": chalk, a
    canvas drawing in white). Uneven lighting is flattened, then the ground's level and
    noise (paper texture, JPEG artefacts) go to 0 and the typical level of the ink to 1.
    reference: with np.median, np.percentile and np.clip, as before 2026-12-06 (see `center_digit`).
    """
    quantiles = np.percentile if reference else percentiles
    median = np.median if reference else (lambda values: percentiles(values, [50])[0])
    grey = np.asarray(grey, np.float32)
    if grey.ndim != 2 or min(grey.shape) < MIN_SIDE:
        raise ImageError(f"expected a grey image (H, W) at least {MIN_SIDE}x{MIN_SIDE}, got {grey.shape}")
    border = _border(grey)
    # the tails hold the ink: a 1-pixel pen line is ~0.15% of a 1000x1000 canvas
    polarity = None if reference else _clear_polarity(grey, border)
    if polarity is None:
        border_level = float(median(border))
        darkest, lightest = quantiles(grey, [0.05, 99.95])
        if lightest - darkest < MIN_CONTRAST:
            raise ImageError("no ink found: the image is uniform")
        polarity = "dark-on-light" if border_level - darkest > lightest - border_level else "light-on-dark"
    bright = 1 - grey if polarity == "dark-on-light" else grey
    contrast = bright - _ground_level(bright, reference)  # the ground near 0, its noise on both sides

    # The border shows the ground, and the ends of any strokes that cross it (a thick USPS '0'
    # covers half its border). Ink only adds bright values, so the ground is read from the
    # border's darker part: its level is the 25th percentile, its noise (paper texture, sensor
    # and JPEG noise) sigma the spread from the 5th to the 25th (0.97 sigma for Gaussian noise,
    # about 1.3 sigma when ink covers half the border). Ink is what Otsu's threshold splits off
    # and also stands clear of that noise (a thin pen line is too small a class for Otsu alone
    # in a noisy photo). The stretch maps the ground's noise ceiling to 0, the ink's median to 1.
    low_tail, ground_level = quantiles(_border(contrast), [5, 25])
    sigma = float(ground_level - low_tail) / 0.97
    top = float(contrast.max())
    if top <= ground_level:
        raise ImageError("no ink found: no strokes, only areas of different brightness")
    if reference:
        levels = np.round(np.clip(contrast, 0, None) * (255 / top)).astype(np.uint8)
    else:  # the same levels (rounded half to even, as np.round) in 0.03 ms, not 0.25, on a 280x280 canvas
        levels = cv2.convertScaleAbs(np.maximum(contrast, np.float32(0)), alpha=255 / top)
    otsu, _ = cv2.threshold(levels, 0, 255, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
    is_ink = contrast > max(otsu * top / 255, ground_level + 4 * sigma)
    ink_level = float(median(contrast[is_ink])) if is_ink.any() else ground_level
    # Blank noisy paper's "ink" (its upper tail) has a median 4.1-4.3 sigma above the ground
    # (measured on Gaussian noise of 0.02-0.2); the faintest real ink, on a cheque's printed
    # security pattern that makes the border look noisy, stands 4.1-6 sigma above it.
    if ink_level - ground_level < max(MIN_CONTRAST, 5 * sigma):
        raise ImageError(
            f"no ink found: nothing stands out from the ground (by {MIN_CONTRAST:.0%} of black to "
            "white and above its noise)"
        )
    low = min(ground_level + 3 * sigma, (ground_level + ink_level) / 2)
    if reference:
        return np.clip((contrast - low) / (ink_level - low), 0, 1).astype(np.float32), polarity
    # in place, in float32: np.clip with Python numbers took 0.23 ms of a 280x280 canvas, this 0.02
    contrast -= np.float32(low)
    contrast /= np.float32(ink_level - low)
    return np.clip(contrast, np.float32(0), np.float32(1), out=contrast), polarity


def _clear_polarity(grey: np.ndarray, border: np.ndarray) -> str | None:
    """`ink_map`'s polarity, and its test that the image is not uniform, decided from bounds on the
    0.05th and 99.95th percentiles and on the border's median, where the bounds leave no doubt (None:
    rank them). The bounds are the least and greatest values, and two levels read from every 16th
    value, proven to have enough values beyond them by counting: 0.06 ms on a 280x280 canvas, where
    ranking took 0.2 (its ink seldom lies at one level for `percentiles`' shortcut)."""
    flat = grey.ravel()
    size = flat.size
    if size < EXTREMES_FIRST:
        return None
    deepest = min(math.floor(0.0005 * (size - 1)) + 1, size - 1)  # the 0.05th's upper rank
    highest = math.floor(0.9995 * (size - 1))  # the 99.95th's lower rank
    sample = flat[::16]
    pick = min(len(sample) // 2, 2 * (deepest // 16) + 4)
    ranked = np.partition(sample, [pick, len(sample) - 1 - pick])
    dark_bound, light_bound = float(ranked[pick]), float(ranked[len(sample) - 1 - pick])
    if np.count_nonzero(flat <= dark_bound) <= deepest or np.count_nonzero(flat >= light_bound) < size - highest:
        return None
    least, greatest, _, _ = cv2.minMaxLoc(flat)
    # darkest lies in [least, dark_bound], lightest in [light_bound, greatest]; margins for rounding
    if light_bound - dark_bound < MIN_CONTRAST + 1e-9:
        return None
    # and the border's median (the ground's level) between its least and greatest values (an even
    # ground's), else ranked
    border_least, border_greatest, _, _ = cv2.minMaxLoc(border)
    for low, high in ((border_least, border_greatest), (float(percentiles(border, [50])[0]),) * 2):
        if dark_bound + greatest < 2 * low - 1e-9:
            return "dark-on-light"
        if least + light_bound > 2 * high + 1e-9:
            return "light-on-dark"
    return None


def plain_ink(grey: np.ndarray) -> np.ndarray:
    """Ink bright, stretched within a small grey image (a digit's box, a line of writing) where
    `ink_map`'s noise test fails: its median (the paper) and below to 0, its 99th percentile (the
    ink's core) to 1, halfway between the two at 0.2. A cheque's printed security pattern makes the
    ground look noisy and fails ink_map on 7 of ORAND-CAR-A's 1,080 images whose digits are plain
    to see. The polarity is the side the tails reach further from the median."""
    grey = np.asarray(grey, np.float32)
    ground = float(np.median(grey))
    darkest, lightest = np.percentile(grey, [1, 99])
    bright = 1 - grey if ground - darkest > lightest - ground else grey
    ground, top = float(np.median(bright)), float(np.percentile(bright, 99))
    if top - ground < MIN_CONTRAST:
        raise ImageError(f"no ink found: the darkest and the median differ by under {MIN_CONTRAST:.0%}")
    low = ground + 0.375 * (top - ground)  # (ground + top) / 2 maps to 0.2
    return np.clip((bright - low) / (top - low), 0, 1).astype(np.float32)


def percentiles(values: np.ndarray, percents: list[float]) -> np.ndarray:
    """np.percentile's answer (its default, linear interpolation between the two nearest ranks;
    float64, equal to 1e-7 of the values' range) from one np.partition of the values: 0.01 ms
    on a 16x16 digit, not 0.06 (np.percentile and np.median spend most of that checking their
    arguments), and 0.14 ms on a 280x280 canvas, not 0.20. Ranks within the runs of values equal
    to the least or the greatest (an even ground, ink at full strength) are those values: the
    0.05th and 99.95th percentiles of a 280x280 canvas in 0.03 ms, without the partition."""
    flat = values.ravel()
    positions = np.asarray(percents, np.float64) / 100 * (flat.size - 1)
    lows = np.floor(positions).astype(np.intp)
    highs = np.minimum(lows + 1, flat.size - 1)
    ranks = np.concatenate([lows, highs])
    if flat.size >= EXTREMES_FIRST:
        least, greatest = flat.min(), flat.max()
        at_least, below_greatest = np.count_nonzero(flat == least), flat.size - np.count_nonzero(flat == greatest)
        if np.all((ranks < at_least) | (ranks >= below_greatest)):
            ranked = np.where(ranks < at_least, least, greatest)
            return _interpolated(ranked[: len(lows)], ranked[len(lows) :], positions - lows)
    ranked = np.partition(flat, sorted(set(ranks.tolist())))
    return _interpolated(ranked[lows], ranked[highs], positions - lows)


def _interpolated(below: np.ndarray, above: np.ndarray, t: np.ndarray) -> np.ndarray:
    """numpy's linear interpolation between two ranks' values, in float64."""
    below, above = below.astype(np.float64), above.astype(np.float64)
    return np.where(t >= 0.5, above - (above - below) * (1 - t), below + (above - below) * t)


def _border(image: np.ndarray) -> np.ndarray:
    """The pixels of the outer 5% on every side (at least one pixel), flattened."""
    rim = max(1, min(image.shape) // 20)
    return np.concatenate([image[:rim].ravel(), image[-rim:].ravel(), image[:, :rim].ravel(), image[:, -rim:].ravel()])


def _ground_level(bright: np.ndarray, reference: bool = False) -> np.ndarray:
    """The ground under ink-bright strokes, pixel by pixel: a morphological opening.

    A window half the image's shorter side fits inside no stroke of a digit, so the opening
    (a minimum, then a maximum, over that window) removes the strokes and keeps slow changes
    of the ground, such as a shadow across a photographed page. Computed at <= 256 pixels.

    Where every window holds a pixel at the image's least level (an even ground: a canvas, a
    scan), the minimum is that level everywhere, and so is the opening: known without computing
    it (the ground of a 280x280 canvas, whose 256x256 copy takes 129x129 windows, in 0.24 ms with
    the shrinking, not 0.94; judged at full size by `_even_at_full_size`, 0.06 ms). Else, and with
    `reference`, it is computed.
    """
    height, width = bright.shape
    shrink = min(1.0, 256 / max(height, width))
    if not reference and 1 > shrink >= 0.5 and _even_at_full_size(bright, shrink):
        return np.full((height, width), bright.min(), np.float32)
    small = (
        cv2.resize(
            bright, (max(1, round(width * shrink)), max(1, round(height * shrink))), interpolation=cv2.INTER_AREA
        )
        if shrink < 1
        else bright
    )
    window = max(3, min(small.shape) // 2) | 1  # odd: centred, so the opening shifts nothing
    least = small.min()
    if not reference and _in_every_window(small == least, window):
        # OpenCV's bilinear enlargement gives an even image back exactly (checked on 3,248 levels and sizes)
        return np.full((height, width), least, np.float32)
    opened = cv2.morphologyEx(small, cv2.MORPH_OPEN, cv2.getStructuringElement(cv2.MORPH_RECT, (window, window)))
    return cv2.resize(opened, (width, height), interpolation=cv2.INTER_LINEAR) if shrink < 1 else opened


def _even_at_full_size(bright: np.ndarray, shrink: float) -> bool:
    """Whether `_ground_level` would find the ground even (its shrunken copy's least level in every
    window), judged without shrinking: an image up to 512 pixels (a 280x280 canvas), where OpenCV's
    area averaging by a factor that is not whole took 0.25 ms of the ground's 0.28. A pixel whose
    5x5 neighbourhood is all at the least level lies in a cell of the shrunken copy that is all at
    it (a cell spans under 2 pixels); if every window of the pixels that a shrunken window
    covers holds such a pixel, the copy's windows all hold its least level, which is this one.
    Those windows are judged on every 4th row and column (each pixel is within 3 of one of them):
    0.03 ms in all on a canvas, where a box filter of the whole image's 137x137 windows took 0.06."""
    height, width = bright.shape
    window = max(3, min(round(height * shrink), round(width * shrink)) // 2) | 1  # `_ground_level`'s
    reach = math.floor((window // 2 - 1) / shrink)  # full-size pixels that stay within its half-width
    if reach < 3:
        return False
    least = bright.min()
    pure = cv2.erode((bright == least).view(np.uint8), np.ones((5, 5), np.uint8))
    return _in_every_window(np.ascontiguousarray(pure[::4, ::4]), 2 * ((reach - 3) // 4) + 1)


def _in_every_window(mask: np.ndarray, window: int) -> bool:
    """Whether every window x window of a boolean image (cut off at the image's edges, as OpenCV's
    morphology cuts it) holds a True pixel: the windows' counts, by a box filter (16-bit, saturating:
    a window of a 512-pixel image holds up to 257 x 257, and only whether a count is 0 matters)."""
    counts = cv2.boxFilter(
        mask.view(np.uint8), cv2.CV_16U, (window, window), normalize=False, borderType=cv2.BORDER_CONSTANT
    )
    return bool(counts.min() > 0)


# --- the digit --------------------------------------------------------------------------------------


def stroke_width(ink: np.ndarray) -> float:
    """Mean stroke width in pixels: the ink's area divided by the strokes' length.

    The area is the sum of the ink values (so anti-aliased edges count in part); the length is
    half the outline of the strokes (ink >= 0.5), holes included, as a stroke of length L has
    an outline of about 2L. 0.0 when no pixel reaches 0.5.
    """
    mask = (np.asarray(ink) >= 0.5).astype(np.uint8)
    contours, _ = cv2.findContours(mask, cv2.RETR_LIST, cv2.CHAIN_APPROX_NONE)
    outline = sum(cv2.arcLength(contour, True) for contour in contours)
    return 2 * float(np.sum(ink, dtype=np.float64)) / outline if outline > 0 else 0.0


def center_digit(ink: np.ndarray, *, stroke: bool = True, reference: bool = False) -> np.ndarray:
    """Prepare one digit's ink map as MNIST was: (28, 28) uint8, ink bright.

    ink: (H, W) ink-bright, float in [0, 1] or uint8, of any size: a whole image or a crop cut
    from a page, with or without ground around the digit. Specks far smaller than the digit's
    largest stroke are dropped; the digit's longer side is fitted into 20 pixels keeping its
    aspect ratio, with anti-aliasing; its centre of mass (of the grey values, as MNIST) is put
    at (14, 14). With `stroke`, strokes much thinner or thicker than MNIST's are brought to
    MNIST's typical width first. As NIST's originals were binary, the ink is binarised (at 8x
    the output resolution or finer): the grey levels of the result are its anti-aliasing.

    reference: computed the way it was before 2026-12-06 (components with their statistics and a
    distance transform over the whole image, OpenCV's thinning, warpAffine placing): the slower
    reference the fast path is held to (`digitlab bench prepare`, the tests). The same pixels:
    identical on every digit of USPS's test set, HwD-1000, 1,000 canvases and the reader's 1,300
    candidates on 100 generated pages.
    """
    ink = np.asarray(ink)
    if ink.ndim != 2 or ink.size == 0:
        raise ImageError(f"expected an ink map (H, W), got shape {ink.shape}")
    ink = ink.astype(np.float32) / 255 if ink.dtype == np.uint8 else np.clip(ink.astype(np.float32), 0, 1)
    crop, box = _digit_crop(ink, reference)  # box: the digit's own, in the crop's pixels
    scale = MNIST_BOX / max(box[1] - box[0], box[3] - box[2])  # output pixels per input pixel

    # NIST's originals were binary, at a resolution where strokes were several pixels wide; MNIST
    # is their anti-aliased reduction. So: binarise at >= 8x the output resolution (finer when
    # that would leave a stroke under 3 pixels wide), reshape strokes there, then area-average.
    work_scale, level = WORK_SCALE * scale, 0.5
    if work_scale < 1:
        width = stroke_width(crop)
        resolved = min(1.0, max(work_scale, RESOLVED_STROKE / width)) if width > 0 else 1.0
        work_scale = min(resolved, MAX_WORK_BOX * scale / MNIST_BOX)
        if work_scale < resolved:  # capped: a stroke under a working pixel wide averages to below 0.5
            level = 0.5 * min(1.0, width * work_scale)  # so binarise at half the level it averages to
    work = (_resize(crop, work_scale) >= level).view(np.uint8)  # 0 or 1
    if stroke:
        work = _normalise_stroke(work, scale / work_scale, reference)

    box = _box(work)
    if box is None:
        raise ImageError("no ink found: the strokes are too faint")
    scale = MNIST_BOX / max(box[1] - box[0], box[3] - box[2])  # output pixels per working pixel
    fine = _crop(work, box, math.ceil(MARGIN / scale)).astype(np.float32)
    return _place_at_center_of_mass(_resize(fine, scale * WORK_SCALE), reference)


def _box(mask: np.ndarray) -> tuple[int, int, int, int] | None:
    """(top, bottom, left, right) of the nonzero pixels of a uint8 mask, bottom and right
    exclusive; None if none."""
    left, top, width, height = cv2.boundingRect(mask)
    if width == 0:
        return None
    return top, top + height, left, left + width


def _digit_crop(ink: np.ndarray, reference: bool = False) -> tuple[np.ndarray, tuple[int, int, int, int]]:
    """The digit's ink without specks, cropped to its box and MARGIN output pixels around it (zero
    where that leaves the image), and the digit's box in the crop.

    Components (8-connected, ink >= INK_THRESHOLD) under SPECK_FRACTION of the largest's area are
    specks: dust, noise, a neighbour's stray tip. Only ink within one output pixel of the
    digit's own components is kept, so their anti-aliased edges stay and the specks go. All that
    is kept lies within the crop (its margin is three output pixels), so the rest of the image
    is never looked at again: on a 280x280 canvas that, and a dilation by a Euclidean disc in place
    of a distance transform, took the step from 1.3 ms to 0.25-0.35 (same pixels kept), and keeping
    ink within the disc's inscribed square for a digit over 160 pixels (below) to 0.15.
    """
    mask = (ink >= INK_THRESHOLD).view(np.uint8)
    if reference:
        count, labels, stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=8)
    else:
        count, labels = cv2.connectedComponents(mask, connectivity=8)
    if count < 2:
        raise ImageError("no ink found: no stroke reaches the ink threshold")
    if reference:
        areas = stats[1:, cv2.CC_STAT_AREA]
        mask = np.isin(labels, 1 + np.flatnonzero(areas >= SPECK_FRACTION * areas.max())).view(np.uint8)
    elif count > 2:  # specks to judge; the statistics cost 3 times the labelling, so only then
        areas = np.bincount(labels.ravel(), minlength=count)[1:]
        mask = np.concatenate([[0], areas >= SPECK_FRACTION * areas.max()]).astype(np.uint8)[labels]
    box = _box(mask)
    reach = math.ceil(max(box[1] - box[0], box[3] - box[2]) / MNIST_BOX)  # one output pixel
    margin = math.ceil(MARGIN * max(box[1] - box[0], box[3] - box[2]) / MNIST_BOX)  # >= reach
    inner = (margin, margin + box[1] - box[0], margin, margin + box[3] - box[2])
    if reference:
        distance = cv2.distanceTransform(1 - mask, cv2.DIST_L2, cv2.DIST_MASK_PRECISE)
        return _crop(np.where(distance <= reach, ink, np.float32(0)), box, margin), inner
    mask, crop = _crop(mask, box, margin), _crop(ink, box, margin)
    if reach > WORK_SCALE:
        # A digit over 8 x 20 pixels is area-reduced to its working image, whose pixel reaches 0.5
        # only with ink >= INK_THRESHOLD in its window (box / 160 input pixels across, a fifth of
        # the square below): faint ink further out shows only in `stroke_width`'s sum (and under a
        # capped working box's lowered level). So the square inscribed in the disc (half-side
        # reach / sqrt 2: one rectangle, two 1-D passes) keeps what the working image sees, in
        # 0.05 ms, not 0.2, on a 280x280 canvas's digit (radius 10); what lies 0.7-1 output pixel
        # out (faint ink, a speck) is dropped. No pixel of 1,000 canvases changed.
        half = math.isqrt(reach * reach // 2)
        near = cv2.dilate(mask, cv2.getStructuringElement(cv2.MORPH_RECT, (2 * half + 1, 2 * half + 1)))
    else:
        near = _dilated_by_disc(mask, reach)
    return np.where(near > 0, crop, np.float32(0)), inner


def _dilated_by_disc(mask: np.ndarray, radius: int) -> np.ndarray:
    """`mask` (uint8) grown by every pixel within `radius` (Euclidean): what `distance <= radius`
    keeps. The disc is the union of the rectangles (2 w(dy) + 1) x (2 dy + 1), w(dy) its half-width
    dy rows from its centre, and OpenCV dilates by a rectangle in two 1-D passes: at radius 10 on a
    280x280 canvas's digit, 0.13 ms against 0.43 for the disc as one kernel."""
    grown = None
    for dy in range(radius + 1):
        half = math.isqrt(radius * radius - dy * dy)
        if dy < radius and math.isqrt(radius * radius - (dy + 1) ** 2) == half:
            continue  # the next, taller rectangle as wide holds this one
        step = cv2.dilate(mask, cv2.getStructuringElement(cv2.MORPH_RECT, (2 * half + 1, 2 * dy + 1)))
        grown = step if grown is None else np.maximum(grown, step, out=grown)
    return grown


def _crop(image: np.ndarray, box: tuple[int, int, int, int], margin: int) -> np.ndarray:
    """The box plus `margin` pixels on every side, zero (no ink) where that leaves the image."""
    top, bottom, left, right = box[0] - margin, box[1] + margin, box[2] - margin, box[3] + margin
    height, width = image.shape
    crop = np.zeros((bottom - top, right - left), image.dtype)  # np.pad costs 0.04 ms more
    inside = image[max(top, 0) : min(bottom, height), max(left, 0) : min(right, width)]
    crop[max(0, -top) : max(0, -top) + inside.shape[0], max(0, -left) : max(0, -left) + inside.shape[1]] = inside
    return crop


def _resize(image: np.ndarray, scale: float) -> np.ndarray:
    """Anti-aliased resize: area averaging to shrink, bilinear to enlarge."""
    height, width = image.shape
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    return cv2.resize(image, size, interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)


def _normalise_stroke(work: np.ndarray, out_per_work: float, reference: bool = False) -> np.ndarray:
    """Thicken or thin the strokes of a binary (0/1 uint8) image when their width (in output
    pixels) is far from MNIST's.

    Growing every stroke by d output pixels on each side also grows the digit's box by 2d, and
    refitting the box into 20 pixels then scales the strokes by 20 / (20 + 2d); d is chosen so
    that the width after the refit is MNIST's median. Thinning is an erosion, which would erase
    the thin parts of an uneven stroke (the hairline top of a '6' whose loop is filled in) and
    shorten every stroke: so the skeleton, drawn at MNIST's width within the original strokes,
    is kept as well.
    """
    width = stroke_width(work) * out_per_work
    low, high = MNIST_STROKE_RANGE
    if low <= width <= high:
        return work
    grow = MNIST_BOX * (MNIST_STROKE_WIDTH - width) / (2 * (MNIST_BOX - MNIST_STROKE_WIDTH))
    radius = round(abs(grow) / out_per_work)
    if radius == 0:
        return work
    if grow > 0:
        return cv2.dilate(work, _disc(radius))
    skeleton = _skeleton(work, reference)
    core = cv2.dilate(skeleton, _disc(round((MNIST_STROKE_WIDTH / out_per_work - 1) / 2)))
    return np.maximum(cv2.erode(work, _disc(radius)), work & core)


def _skeleton(work: np.ndarray, reference: bool) -> np.ndarray:
    """The Zhang-Suen skeleton (0/1 uint8) of a 0/1 image whose border rows and columns are 0.

    The same pixels as OpenCV's `ximgproc.thinning` (checked on the 149 working images that 827
    USPS, canvas and page digits thin), in 1/3.6 of its time: each half-iteration is one 3x3
    filter that writes the 8 neighbours of every pixel as one byte and one look-up of that byte,
    on the digit's box only (the working image's margin of 24-30 empty pixels a side had nearly
    doubled the area). Thick strokes take 30-40 half-iterations at 8-10x: 3.96 ms a digit in
    OpenCV's on those 149, 1.09 ms here (one core of a shared 2-core AMD EPYC).
    `reference`: OpenCV's own, on the whole image.
    """
    if reference:
        return cv2.ximgproc.thinning(work * np.uint8(255)) // 255
    box = _box(work)
    if box is None:
        return work
    top, bottom, left, right = max(box[0] - 1, 0), box[1] + 1, max(box[2] - 1, 0), box[3] + 1
    image = work[top:bottom, left:right].copy()
    while True:
        removed = False
        for table in _ZHANG_SUEN:
            neighbours = cv2.filter2D(image, -1, _NEIGHBOUR_BITS, borderType=cv2.BORDER_CONSTANT)
            drop = cv2.LUT(neighbours, table) & image
            if drop.any():
                image -= drop
                removed = True
        if not removed:
            break
    skeleton = np.zeros_like(work)
    skeleton[top:bottom, left:right] = image
    return skeleton


def _zhang_suen_tables() -> tuple[np.ndarray, np.ndarray]:
    """For each of the 256 neighbourhoods of an ink pixel (bit k set: neighbour k is ink, counted
    clockwise from north), 1 where Zhang and Suen's first (second) half-iteration removes it: it has
    2-6 ink neighbours, one 0-to-1 change going round them, and (N, E, S) and (E, S, W) not all ink
    (the second: (N, E, W) and (N, S, W))."""
    tables = np.zeros((2, 256), np.uint8)
    for code in range(256):
        n, ne, e, se, s, sw, w, nw = ((code >> k) & 1 for k in range(8))
        ring = (n, ne, e, se, s, sw, w, nw, n)
        changes = sum(ring[k] == 0 and ring[k + 1] == 1 for k in range(8))
        if changes == 1 and 2 <= code.bit_count() <= 6:
            tables[0, code] = not (n and e and s) and not (e and s and w)
            tables[1, code] = not (n and e and w) and not (n and s and w)
    return tables[0], tables[1]


_ZHANG_SUEN = _zhang_suen_tables()
# The neighbour bits as a correlation kernel: north 1, north-east 2, east 4, ... north-west 128.
_NEIGHBOUR_BITS = np.array([[128, 1, 2], [64, 0, 4], [32, 16, 8]], np.float32)


def _disc(radius: int) -> np.ndarray:
    return cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * radius + 1, 2 * radius + 1))


def _center_of_mass(image: np.ndarray) -> np.ndarray:
    """(row, column) of the grey values' centre of mass, in pixel index coordinates."""
    moments = cv2.moments(image)
    return np.array([moments["m01"] / moments["m00"], moments["m10"] / moments["m00"]])


def _place_at_center_of_mass(fine: np.ndarray, reference: bool = False) -> np.ndarray:
    """Place the digit (drawn at WORK_SCALE pixels per output pixel) with its centre of mass at
    (14, 14) of 28x28, and reduce it by area averaging.

    The shift is a whole number of fine pixels (1/8 output pixel), so the centre lands within
    1/16 pixel and the strokes are not blurred, as a sub-pixel interpolated shift would blur
    them. A lopsided digit can spill past the edge, which moves the centre: then the shift is
    corrected from the result.
    """
    size = MNIST_SIZE * WORK_SCALE
    target = MNIST_CENTER * WORK_SCALE + (WORK_SCALE - 1) / 2  # the fine pixel at output pixel 14's centre
    shift = np.round(target - _center_of_mass(fine))
    for _ in range(3):
        if reference:
            matrix = np.float32([[1, 0, shift[1]], [0, 1, shift[0]]])
            placed = cv2.warpAffine(fine, matrix, (size, size), flags=cv2.INTER_NEAREST, borderValue=0)
        else:
            placed = _shifted(fine, int(shift[0]), int(shift[1]), size)
        digit = cv2.resize(placed, (MNIST_SIZE, MNIST_SIZE), interpolation=cv2.INTER_AREA)
        error = MNIST_CENTER - _center_of_mass(digit)
        if np.abs(error).max() <= 0.5 / WORK_SCALE + 1e-6:
            break
        shift += np.round(error * WORK_SCALE)
    return np.round(np.clip(digit, 0, 1) * 255).astype(np.uint8)


def _shifted(image: np.ndarray, down: int, right: int, size: int) -> np.ndarray:
    """`image` moved by whole pixels onto a zero (size, size) canvas, what leaves it cut off: the
    same pixels as a nearest-neighbour warpAffine by that translation, by slicing."""
    canvas = np.zeros((size, size), image.dtype)
    height, width = image.shape
    top, left = max(down, 0), max(right, 0)
    bottom, right_edge = min(down + height, size), min(right + width, size)
    if top < bottom and left < right_edge:
        canvas[top:bottom, left:right_edge] = image[top - down : bottom - down, left - right : right_edge - right]
    return canvas


def to_mnist_style(
    source: ImageSource,
    *,
    stroke: bool = True,
    max_pixels: int = MAX_PIXELS,
    max_bytes: int = MAX_BYTES,
    reference: bool = False,
) -> np.ndarray:
    """Any single-digit image -> (28, 28) uint8, ink bright, prepared as MNIST was.

    `load_image`, then `ink_map` (either polarity), then `center_digit`; the result goes
    straight to `Model.predict`. Raises ImageError for what cannot be read or holds no ink.
    reference: both steps computed as before 2026-12-06 (see `center_digit`).
    """
    ink, _ = ink_map(load_image(source, max_pixels=max_pixels, max_bytes=max_bytes), reference=reference)
    return center_digit(ink, stroke=stroke, reference=reference)


# --- lines of writing, for the line recognizer ---------------------------------------------------

LINE_HEIGHT = 32  # the line recognizer's input height, pixels
LINE_STRIDE = 4  # its frames: one per 4 input columns, so widths are multiples of 4
MAX_LINE_WIDTH = 4096  # a line longer than 128 line heights is cut (no digit string is that long)
LINE_SAMPLE_WIDTH = 64  # the width a line model's config names: a model file is checked on it


def line_ink(grey: np.ndarray) -> np.ndarray:
    """A grey crop of one line of writing (float [0, 1], either polarity) as the line recognizer
    sees its ink: `ink_map` of the crop itself, so that the stretch is the line's own whatever
    the rest of the page looks like, and `plain_ink` where ink_map finds no ink above the noise
    (a cheque's security pattern). ImageError when neither finds any."""
    try:
        ink, _ = ink_map(grey)
    except ImageError:
        ink = plain_ink(grey)
    return ink


def line_input(ink: np.ndarray) -> np.ndarray:
    """An ink-bright line crop (H, W) float in [0, 1] -> the line recognizer's input: float32
    (LINE_HEIGHT, W'), the crop scaled to LINE_HEIGHT rows keeping its aspect (area-averaged when
    shrinking), W' a multiple of LINE_STRIDE (the right edge padded with ground), at most
    MAX_LINE_WIDTH."""
    ink = np.asarray(ink, np.float32)
    if ink.ndim != 2 or min(ink.shape) < 1:
        raise ImageError(f"expected a line crop (H, W), got shape {ink.shape}")
    height, width = ink.shape
    scale = LINE_HEIGHT / height
    columns = min(MAX_LINE_WIDTH, max(LINE_STRIDE, round(width * scale)))
    resized = cv2.resize(ink, (columns, LINE_HEIGHT), interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)
    padded = -(-columns // LINE_STRIDE) * LINE_STRIDE
    return np.pad(np.clip(resized, 0, 1), ((0, 0), (0, padded - columns))).astype(np.float32)


# --- pixels given as arrays ---------------------------------------------------------------------
# One rule for every caller: integers are levels 0-255; floats lie in [0, 1] (levels / 255) and are
# scaled back and rounded; ink is bright on a dark ground, as in MNIST. Nothing else is converted.


def to_uint8_images(images, image_shape: tuple[int, int, int], *, name: str = "images") -> np.ndarray:
    """A batch of images as a model takes them, (N, C, H, W) uint8, from (H, W) (one image),
    (N, H, W) (one channel) or (N, C, H, W): numpy arrays, torch tensors (any device) or nested
    lists. PixelError, naming `name`, for another shape or values outside the rule above."""
    c, h, w = image_shape
    wanted = f"of shape (N, {h}, {w}) or (N, {c}, {h}, {w})" if c == 1 else f"of shape (N, {c}, {h}, {w})"
    array = _as_array(images, name, wanted)
    if array.ndim == 2:
        array = array[None]
    if array.ndim == 3 and c == 1:
        array = array[:, None]
    if array.ndim != 4 or array.shape[1:] != (c, h, w):
        raise PixelError(f"{name} must be {wanted}, got shape {array.shape}")
    return _levels(array, name)


def to_uint8_digit(pixels, *, name: str = "a prepared digit", json_numbers: bool = False) -> np.ndarray:
    """One digit already MNIST-style, as the model sees it: (28, 28) uint8, ink bright, from a
    (28, 28) array or 28 lists of 28 numbers. PixelError, naming `name`, for anything else.

    json_numbers: the numbers came as JSON, which does not keep their type (JavaScript writes 1.0
    as 1, Python 255.0 for a float level), so their values decide instead: all in [0, 1] with a
    fraction among them are on the 0-1 scale, any others are levels 0-255 (rounded).

    A digit with no ink (all 0, all 255, any uniform grey) is ImageError "no ink found", as a blank
    image is (`require_ink`): it holds no digit to read. `to_uint8_images` (`Model.predict`'s raw
    batches) has no such rule.
    """
    wanted = f"a {MNIST_SIZE}x{MNIST_SIZE} array: {MNIST_SIZE} rows of {MNIST_SIZE} numbers"
    array = _as_array(pixels, name, wanted)
    if array.shape != (MNIST_SIZE, MNIST_SIZE):
        raise PixelError(f"{name} must be {wanted}, got shape {array.shape}")
    return require_ink(_levels(array, name, json_numbers=json_numbers), name)


def require_ink(digit: np.ndarray, name: str = "a prepared digit") -> np.ndarray:
    """`digit` ((H, W) uint8, ink bright) as it is, unless it is uniform: then ImageError "no ink
    found", by the rule that refuses a blank image or canvas (`ink_map`'s first: its levels, the
    0.05% tails aside, span less than MIN_CONTRAST of black to white). 28x28 zeros had been read as a
    "1" at 90%, 255s as a "5" at 49%; all 70,000 MNIST digits pass (the narrowest spans 247 levels).

    Only that rule: `ink_map`'s others (nothing standing out from the ground above its noise, which
    refuses blank noisy paper) pass every MNIST digit too, but cost 0.17 ms a digit against this one's
    0.004 ms, and checked as the service checks (twice a request) took `bench serve`'s 28x28 pixels
    from 1,300-1,700 requests/s to 630-920 in four runs on a shared 2-core AMD EPYC. An array of noise
    has ink in it to read, if no digit.
    """
    # np.percentile's answer, known without it (0.004 ms, not 0.03) when `tail` pixels (2 of 784) lie
    # at the least level and `tail` at least 26 levels above it: the 0.05th percentile is then that
    # least level, the 99.95th no lower than those 26 above it.
    low, tail = int(digit.min()), math.floor(0.0005 * (digit.size - 1)) + 2
    step = math.floor(MIN_CONTRAST * 255) + 1
    if np.count_nonzero(digit == low) >= tail and np.count_nonzero(digit >= low + step) >= tail:
        return digit
    darkest, lightest = np.percentile(digit, [0.05, 99.95]) / 255
    if lightest - darkest < MIN_CONTRAST:
        raise ImageError(
            f"no ink found in {name}: it is uniform (levels {digit.min()} to {digit.max()}; a digit is bright "
            "ink on a dark ground, as in MNIST)"
        )
    return digit


def _as_array(values, name: str, wanted: str) -> np.ndarray:
    """`values` as a numpy array (an array's own data, not a copy)."""
    if hasattr(values, "detach"):  # a torch tensor, on any device (torch is not imported here: start-up time)
        values = values.detach().cpu()
        if values.is_floating_point() and values.element_size() < 4:  # numpy has no bfloat16
            values = values.float()
    try:
        return np.asarray(values)
    except ValueError as err:  # nested lists of different lengths, or nested deeper than numpy's 64 dimensions
        raise PixelError(f"{name} must be {wanted}, got lists of uneven lengths or depths") from err


def _levels(array: np.ndarray, name: str, *, json_numbers: bool = False) -> np.ndarray:
    """The uint8 levels of an array of numbers, under the rule above (or `to_uint8_digit`'s JSON rule)."""
    if array.dtype == np.uint8:
        return array
    if array.dtype.kind not in "iuf":
        kinds = {"b": "true/false values", "U": "text", "S": "bytes", "c": "complex numbers"}
        got = kinds.get(array.dtype.kind, "other values (or integers beyond 64 bits)")
        raise PixelError(f"{name} must hold numbers only, got {got}")
    if array.dtype.kind == "f" and not np.isfinite(array).all():
        raise PixelError(f"{name} must hold finite numbers")
    if not array.size:
        return array.astype(np.uint8)
    low, high = array.min(), array.max()
    if json_numbers:
        if low < 0 or high > 255:
            raise PixelError(f"{name} must lie in 0-255 (or 0-1)")
        if high <= 1 and array.dtype.kind == "f" and (array != np.round(array)).any():
            return np.round(array * 255).astype(np.uint8)
        return np.round(array).astype(np.uint8)
    if low < 0 or high > (1 if array.dtype.kind == "f" else 255):
        raise PixelError(
            f"{name} must lie in [0, 1] as floats or in 0-255 as integers (ink bright on a dark "
            f"ground), got {low:g} to {high:g}"
        )
    return np.round(array * 255).astype(np.uint8) if array.dtype.kind == "f" else array.astype(np.uint8)
