"""Open, check and normalise medical images so they reach the model as 8-bit pictures.

Shared by the converter, batch inference, the demo and the server client: one place
decides what a readable image is and why a file is refused. PNG, JPEG, TIFF, BMP (and
the few other raster formats in ``PILLOW_FORMATS``) go through Pillow; DICOM goes
through pydicom (see ``decode_dicom``).

Every failure is an ``ImageRejected`` with a short, stable ``reason`` (``REASONS``),
never a decoder's own exception: hostile or broken files (truncated, bit-flipped,
decompression bombs, unreadable, vanished) are counted and listed by the callers, not
crashes. Sizes are checked from the headers before any pixel is decoded, against one
pixel budget, ``MAX_IMAGE_PIXELS``.

ms-swift opens images with Pillow and calls ``.convert("RGB")``. That is right for
8-bit RGB/grayscale files but wrong for the others an X-ray archive holds: a 16-bit
grayscale PNG is clipped to 255 (a white square), a palette or RGBA file keeps
transparency artefacts, CMYK colours shift. ``normalise`` turns each of those into a
plain 8-bit image; files already in ``L`` or ``RGB`` are passed through untouched so
the converter can point at the original file instead of writing a copy.
"""
from __future__ import annotations

import io
import os
import re
import stat
import struct
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

import numpy as np
from PIL import Image, UnidentifiedImageError

from medswift.core.errors import Rejected, one_line

# Modes that ms-swift's ``convert("RGB")`` already handles faithfully.
PASS_THROUGH_MODES = {"L", "RGB"}

# One pixel budget for every format: Pillow's own decompression-bomb limit (89,478,485
# pixels unless the process changed it). Pillow only warns between 1x and 2x that limit
# and raises above 2x; we refuse from 1x, for DICOM too (rows x columns x frames x samples).
MAX_IMAGE_PIXELS: int = int(Image.MAX_IMAGE_PIXELS or 1024 * 1024 * 1024 // 4 // 3)

# Raster formats Pillow may identify a file as. Others (EPS runs Ghostscript, PSD, ICNS,
# FITS, ...) are refused as "not an image": fewer parsers facing hostile files. (Camera
# JPEGs with a multi-picture header open through "JPEG" as MPO images.)
PILLOW_FORMATS = ("PNG", "JPEG", "TIFF", "BMP", "GIF", "WEBP", "PPM", "JPEG2000")

# Modalities whose pixels are projection radiographs like the chest X-rays the model saw.
RADIOGRAPH_MODALITIES = ("CR", "DX")

# A deflated DICOM is inflated at most this far to read its header (real headers are a
# few KB); the whole file may inflate to its declared pixel bytes plus this much.
DICOM_HEADER_BYTES = 16 * 1024 * 1024

# Every reason an image can be refused with; callers count and list skips by these labels.
REASONS = (
    "missing image",  # no such file (or it vanished before it was opened)
    "not a file",  # a folder, FIFO, device...
    "unreadable file",  # the operating system refused to read it (permission, I/O error)
    "empty file",
    "not an image",  # no supported format recognised the content
    "truncated image",
    "unreadable image",  # recognised, but the decoder failed
    "image too large",  # above MAX_IMAGE_PIXELS, or not enough memory to decode it
    "image too small",
    "not a readable DICOM",  # header or file meta unreadable
    "DICOM without pixel data",
    "multi-frame DICOM",
    "truncated DICOM",
    "undecodable DICOM",  # pixel data present but not decodable here
)

# What decoders raise on malformed input besides their own error classes, seen while
# fuzzing Pillow 12 and pydicom 3: ValueError ("buffer is not large enough" from a truncated
# TIFF, unknown VR values), TypeError and BytesLengthException from pydicom element
# conversion, zlib.error from deflated DICOMs, StopIteration from pydicom's frame generator,
# NotImplementedError for unknown VRs, struct.error, IndexError, KeyError, ZeroDivisionError,
# EOFError, OverflowError from plugins' header arithmetic. MemoryError is handled apart.
DECODER_ERRORS = (OSError, SyntaxError, ValueError, TypeError, struct.error, IndexError, KeyError,
                  ZeroDivisionError, EOFError, OverflowError, NotImplementedError, AttributeError,
                  RuntimeError, StopIteration, AssertionError, zlib.error)


class ImageRejected(Rejected):
    """A file that cannot be used as an image; ``reason`` is one of ``REASONS``."""


@dataclass
class CheckedImage:
    image: Image.Image  # decoded, normalised to L or RGB
    source_mode: str  # the mode the file had on disk
    changed: bool  # True when normalisation altered the pixels or mode
    # Accepted, but the user should know (e.g. a DICOM whose modality is not a radiograph);
    # converters count and list them, batch inference and the demo show them.
    warnings: list[str] = field(default_factory=list)


def _to_uint8(arr: np.ndarray, lo: float, hi: float) -> np.ndarray:
    if not hi > lo:
        return np.zeros(arr.shape, dtype=np.uint8)
    with np.errstate(all="ignore"):  # a window of astronomically large values may overflow to inf
        out = (np.clip(arr, lo, hi) - lo) * (255.0 / (hi - lo))
        return np.nan_to_num(np.round(out), nan=0.0).astype(np.uint8)


def _finite(arr: np.ndarray) -> np.ndarray | None:
    """``arr`` as float64 with NaN/inf (float DICOM or TIFF pixels) set to the lowest finite value;
    None when no value is finite."""
    arr = arr.astype(np.float64)
    finite = np.isfinite(arr)
    if finite.all():
        return arr
    if not finite.any():
        return None
    arr[~finite] = arr[finite].min()
    return arr


def _rescale_to_uint8(arr: np.ndarray) -> np.ndarray:
    """Linear window from the 0.5th to the 99.5th percentile to 0..255.

    A plain min/max stretch lets one burnt-in marker or a black border flatten the
    lungs into a few grey levels; clipping the extreme half-percent keeps contrast.
    """
    values = _finite(arr)
    if values is None:
        return np.zeros(arr.shape, dtype=np.uint8)
    lo, hi = np.percentile(values, [0.5, 99.5])
    if hi <= lo:  # nearly flat image: fall back to min/max rather than divide by zero
        lo, hi = float(values.min()), float(values.max())
    return _to_uint8(values, lo, hi)


def normalise(img: Image.Image) -> tuple[Image.Image, bool]:
    """Return ``(image in L or RGB, changed)`` for any Pillow mode."""
    mode = img.mode
    if mode in PASS_THROUGH_MODES:
        return img, False
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        arr = np.asarray(img)
        return Image.fromarray(_rescale_to_uint8(arr), mode="L"), True
    if mode == "1":
        return img.convert("L"), True
    if mode in ("P", "PA"):
        # Palette files may carry transparency; go through RGBA so it is composited.
        img = img.convert("RGBA")
        mode = "RGBA"
    if mode in ("RGBA", "LA", "RGBa", "La"):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (0, 0, 0, 255))  # X-ray background is black
        return Image.alpha_composite(background, rgba).convert("RGB"), True
    # CMYK, YCbCr, LAB, HSV and friends: Pillow knows the colour conversion.
    return img.convert("RGB"), True


# --------------------------------------------------------------------------- files
def _open_regular_file(path: Path) -> BinaryIO:
    """Open ``path`` for reading; refuse anything but a non-empty regular file.

    One open, then checks on the open descriptor: what is checked is what gets decoded,
    even if the name is removed or replaced meanwhile. O_NONBLOCK keeps a FIFO from
    blocking the open forever (it has no effect on regular files).
    """
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0)
    try:
        fd = os.open(path, flags)
    except (FileNotFoundError, NotADirectoryError):
        raise ImageRejected("missing image", str(path)) from None
    except IsADirectoryError:
        raise ImageRejected("not a file", str(path)) from None
    except ValueError:  # e.g. a NUL byte in the name
        raise ImageRejected("not a file", repr(str(path))) from None
    except OSError as exc:  # permission denied, symlink loop, name too long, I/O error
        from medswift.core.files import unresolvable

        raise ImageRejected("unreadable file", f"{path.name[:200]}: {unresolvable(exc)}") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise ImageRejected("not a file", str(path))
        if st.st_size == 0:
            raise ImageRejected("empty file", str(path))
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def _has_dicom_marker(path: Path, fh: BinaryIO) -> bool:
    """DICOM Part 10 files carry "DICM" after a 128-byte preamble; the suffix decides too."""
    if path.suffix.lower() in (".dcm", ".dicom"):
        return True
    head = fh.read(132)
    fh.seek(0)
    return head[128:132] == b"DICM"


def _too_large(pixels: int, name: str, what: str) -> ImageRejected | None:
    if pixels > MAX_IMAGE_PIXELS:
        return ImageRejected("image too large", f"{name}: {what}: {pixels:,} pixels, "
                                                f"limit {MAX_IMAGE_PIXELS:,}")
    return None


# --------------------------------------------------------------------------- Pillow formats
def _decode_pillow(fh: BinaryIO, name: str) -> CheckedImage:
    try:
        with Image.open(fh, formats=PILLOW_FORMATS) as img:
            # Pillow reads the size from the header at open time: refuse before decoding
            if (rejection := _too_large(img.width * img.height, name, f"{img.width}x{img.height}")):
                raise rejection
            img.load()  # a full decode is the only way to catch truncated pixel data
            source_mode = img.mode
            norm, changed = normalise(img)
            if norm is img:
                norm = img.copy()  # detach from the closed file
    except (ImageRejected, MemoryError):  # MemoryError: see _guarded
        raise
    except UnidentifiedImageError:
        raise ImageRejected("not an image", name) from None
    except Image.DecompressionBombError as exc:  # above 2x Pillow's limit, raised at open
        raise ImageRejected("image too large", f"{name}: {one_line(exc, 160)}") from None
    except DECODER_ERRORS as exc:
        msg = one_line(exc, 160)
        # Pillow says "image file is truncated"; a truncated TIFF strip gives
        # "buffer is not large enough"; some plugins raise EOFError at the end of the data
        truncated = isinstance(exc, EOFError) or "truncat" in msg.lower() or "not large enough" in msg
        reason = "truncated image" if truncated else "unreadable image"
        raise ImageRejected(reason, f"{name}: {type(exc).__name__}: {msg}" if msg else
                            f"{name}: {type(exc).__name__}") from None
    except Exception as exc:  # last line of defence: a plugin error nobody has seen yet
        raise ImageRejected("unreadable image", f"{name}: unexpected {type(exc).__name__}") from None
    return CheckedImage(image=norm, source_mode=source_mode, changed=changed)


# --------------------------------------------------------------------------- DICOM
# No message from pydicom reaches a detail: they can quote element values (patient name,
# dates), so details carry the file name and the exception type only.
def _dicom_error(reason: str, name: str, exc: BaseException, what: str = "") -> ImageRejected:
    return ImageRejected(reason, f"{name}: {what + ' ' if what else ''}({type(exc).__name__})")


PIXEL_DATA_TAGS = (0x7FE00008, 0x7FE00009, 0x7FE00010)  # float, double float, integer pixels


def _silence_pydicom_value_warnings() -> None:
    """pydicom warns about malformed values by quoting them ("Invalid value for VR IS: ..."); a
    hostile file can put a patient's name in any such element, so value validation on read is
    off. Only pixel geometry and Modality are read here, and those are checked explicitly."""
    from pydicom import config

    config.settings.reading_validation_mode = config.IGNORE


def _read_dicom_header(fh: BinaryIO):
    """Everything before the pixel data, without inflating a deflated dataset whole.

    Returns ``(dataset, offset of the deflated data or None)``. pydicom inflates a deflated
    file completely before parsing anything (``filereader.read_partial``), so a few hundred
    KB can become gigabytes before ``stop_before_pixels`` helps. Here the deflated stream is
    inflated in growing steps only until the pixel data element is reached (at most
    DICOM_HEADER_BYTES). pydicom has no bounded reader, hence this.
    """
    import pydicom
    from pydicom.filebase import DicomBytesIO
    from pydicom.filereader import _read_file_meta_info, read_dataset, read_preamble
    from pydicom.uid import DeflatedExplicitVRLittleEndian

    _silence_pydicom_value_warnings()
    fh.seek(0)
    read_preamble(fh, False)  # InvalidDicomError without the "DICM" marker
    meta = _read_file_meta_info(fh)
    if meta.get("TransferSyntaxUID") != DeflatedExplicitVRLittleEndian:
        fh.seek(0)
        return pydicom.dcmread(fh, stop_before_pixels=True), None
    start = fh.tell()
    inflater = zlib.decompressobj(-zlib.MAX_WBITS)
    head = bytearray()
    wanted = 64 * 1024
    while True:
        while len(head) < wanted and not inflater.eof:
            chunk = inflater.unconsumed_tail or fh.read(64 * 1024)
            if not chunk:
                break
            head += inflater.decompress(chunk, wanted - len(head))
        complete = inflater.eof or len(head) < wanted or wanted >= DICOM_HEADER_BYTES
        # parse once the bytes of a pixel data tag (group 7FE0, little endian) may be there
        if complete or b"\xe0\x7f" in head:
            reached_pixels = False

            def at_pixel_data(tag, vr, length) -> bool:
                nonlocal reached_pixels
                reached_pixels = tag in PIXEL_DATA_TAGS
                return reached_pixels

            buffer = DicomBytesIO(bytes(head))
            buffer.is_little_endian, buffer.is_implicit_VR = True, False
            ds = read_dataset(buffer, is_implicit_VR=False, is_little_endian=True, stop_when=at_pixel_data)
            if reached_pixels or complete:
                ds.file_meta = meta
                return ds, start
        wanted = min(4 * wanted, DICOM_HEADER_BYTES)


def _inflated_size_exceeds(fh: BinaryIO, start: int, limit: int) -> bool:
    """Does the deflated dataset from ``start`` inflate to more than ``limit`` bytes?
    Streams with bounded output; nothing is kept."""
    fh.seek(start)
    inflater = zlib.decompressobj(-zlib.MAX_WBITS)
    total = 0
    while not inflater.eof:
        chunk = inflater.unconsumed_tail or fh.read(256 * 1024)
        if not chunk:
            break
        total += len(inflater.decompress(chunk, 4 * 1024 * 1024))
        if total > limit:
            return True
    return False


def _int_tag(ds, keyword: str, default: int | None) -> int | None:
    """A geometry element as an int (None when absent); ValueError when malformed."""
    value = ds.get(keyword)
    if value is None or str(value).strip() == "":
        return default
    return int(str(value).strip())


def _embedded_frame_pixels(ds, syntax, frames: int) -> int | None:
    """Pixels the first compressed frame declares in its own codestream header.

    A JPEG decoder allocates what the JPEG header says, not what Rows/Columns say: a
    256x256 DICOM whose JPEG frame claims 60000x60000 took 3.8 GB and 18 s to fail.
    None when not encapsulated or when the header cannot be parsed (the decoder will fail).
    """
    from pydicom.encaps import get_frame
    from pydicom.uid import JPEG2000TransferSyntaxes, JPEGLSTransferSyntaxes, JPEGTransferSyntaxes

    if syntax not in (*JPEGTransferSyntaxes, *JPEGLSTransferSyntaxes, *JPEG2000TransferSyntaxes):
        return None
    offsets = None
    if "ExtendedOffsetTable" in ds and "ExtendedOffsetTableLengths" in ds:
        offsets = (ds.ExtendedOffsetTable, ds.ExtendedOffsetTableLengths)
    frame = get_frame(ds.PixelData, 0, number_of_frames=frames, extended_offsets=offsets)
    if syntax in JPEG2000TransferSyntaxes:
        try:  # Pillow parses the J2K/JP2 size header without decoding
            with Image.open(io.BytesIO(frame), formats=["JPEG2000"]) as j2k:
                return j2k.width * j2k.height * max(1, len(j2k.getbands()))
        except UnidentifiedImageError:
            return None
        except Image.DecompressionBombError:  # above 2x Pillow's limit, so above ours too
            return 2 * MAX_IMAGE_PIXELS + 1
    # pydicom's own JPEG / JPEG-LS SOF parser (private, pinned pydicom==3.0.2; the tests cover it)
    from pydicom.pixels.utils import _get_jpg_parameters

    info = _get_jpg_parameters(frame)
    if not info:
        return None
    return info["width"] * info["height"] * max(1, info["components"])


def _modality_warnings(ds) -> list[str]:
    try:
        modality = str(ds.get("Modality", "") or "").strip()
    except Exception:  # an unreadable value is as good as none
        return []
    if not modality or modality.upper() in RADIOGRAPH_MODALITIES:
        return []
    # Only a well-formed code string (A-Z 0-9 space _, 16 chars) is echoed: the element is
    # free bytes in a hostile file and could carry anything, a patient's name included.
    shown = modality if re.fullmatch(r"[A-Z0-9_ ]{1,16}", modality) else "(unrecognised value)"
    return [f"DICOM modality {shown} is not a radiograph (CR/DX); the model was trained on chest X-rays"]


def _render_dicom(arr: np.ndarray, ds, name: str) -> CheckedImage:
    """Decoded pixels to an 8-bit picture the way a viewer shows them."""
    from pydicom.pixels import apply_color_lut, apply_modality_lut, apply_voi_lut

    warnings: list[str] = []
    photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2") or "MONOCHROME2").strip().upper()
    source = f"DICOM {photometric if re.fullmatch(r'[A-Z0-9_ ]{1,16}', photometric) else 'unknown'}"
    if arr.ndim == 2 and photometric == "PALETTE COLOR":
        arr = apply_color_lut(arr, ds)
    if arr.ndim == 3 and arr.shape[-1] in (3, 4):  # colour (pydicom converts YBR to RGB)
        rgb = arr[..., :3]
        if rgb.dtype != np.uint8:
            rgb = _rescale_to_uint8(rgb)
        return CheckedImage(Image.fromarray(np.ascontiguousarray(rgb), mode="RGB"), source, True, warnings)
    if arr.ndim != 2:
        raise ImageRejected("undecodable DICOM", f"{name}: pixel array of shape {arr.shape}")
    try:
        values = apply_modality_lut(arr, ds)
    except DECODER_ERRORS:  # a malformed rescale slope/intercept or LUT: show stored values
        values = arr
        warnings.append("DICOM rescale (modality LUT) unusable; stored pixel values shown")
    if photometric not in ("MONOCHROME1", "MONOCHROME2"):
        warnings.append("DICOM photometric interpretation does not match its single sample per pixel; "
                        "shown as grayscale")
    scaled = None
    if photometric in ("MONOCHROME1", "MONOCHROME2") and ("WindowCenter" in ds or "VOILUTSequence" in ds):
        try:
            windowed = _finite(apply_voi_lut(values, ds, index=0))
        except DECODER_ERRORS:  # e.g. a zero or non-numeric window width
            windowed = None
            warnings.append("DICOM window (VOI LUT) unusable; contrast set from the pixel values")
        if windowed is not None:
            scaled = _to_uint8(windowed, float(windowed.min()), float(windowed.max()))
    if scaled is None:
        scaled = _rescale_to_uint8(values)
    if photometric == "MONOCHROME1":
        scaled = 255 - scaled
    return CheckedImage(Image.fromarray(scaled, mode="L"), source, True, warnings)


def _decode_dicom(fh: BinaryIO, name: str, multi_frame: str) -> CheckedImage:
    frames = _checked_dicom_header(fh, name, multi_frame)  # 1. the header alone: bombs refused
    ds, syntax = _read_dicom_file(fh, name)                 # 2. the whole file
    arr = _first_frame(ds, syntax, frames, name)            # 3. the pixels of the first frame only
    # 4. display: LUTs, windowing, photometric interpretation
    try:
        checked = _render_dicom(arr, ds, name)
    except (ImageRejected, MemoryError):
        raise
    except Exception as exc:  # DECODER_ERRORS and anything else from the LUT code
        raise _dicom_error("undecodable DICOM", name, exc, "display conversion failed") from None
    checked.warnings[:0] = _modality_warnings(ds)
    return checked


def _checked_dicom_header(fh: BinaryIO, name: str, multi_frame: str) -> int:
    """The header alone: refuse bombs before any pixel is decoded or inflated; returns the frame count."""
    from pydicom.errors import InvalidDicomError

    try:
        header, deflated_at = _read_dicom_header(fh)
        rows = _int_tag(header, "Rows", None)
        columns = _int_tag(header, "Columns", None)
        frames = _int_tag(header, "NumberOfFrames", 1)
        samples = _int_tag(header, "SamplesPerPixel", 1)
        bits = _int_tag(header, "BitsAllocated", 64)
    except MemoryError:
        raise
    except (InvalidDicomError, *DECODER_ERRORS) as exc:
        raise _dicom_error("not a readable DICOM", name, exc) from None
    except Exception as exc:  # last line of defence
        raise _dicom_error("not a readable DICOM", name, exc, "unexpected") from None
    if frames is None or frames < 1 or samples is None or samples < 1:
        raise ImageRejected("undecodable DICOM", f"{name}: invalid NumberOfFrames or SamplesPerPixel")
    declared = (rows or 0) * (columns or 0) * frames * samples
    if (rejection := _too_large(declared, name, f"{rows}x{columns} x {frames} frame(s) x {samples} sample(s)")):
        raise rejection
    if frames > 1 and multi_frame == "refuse":
        raise ImageRejected("multi-frame DICOM", f"{name}: {frames} frames")
    if deflated_at is not None:
        bytes_per_sample = (bits + 7) // 8 if bits and 1 <= bits <= 64 else 8
        limit = declared * bytes_per_sample + DICOM_HEADER_BYTES
        if _inflated_size_exceeds(fh, deflated_at, limit):
            raise ImageRejected("image too large", f"{name}: the deflated data inflates beyond "
                                                   f"{limit:,} bytes, more than its header declares")
    return frames


def _read_dicom_file(fh: BinaryIO, name: str):
    """The whole file, once its header passed: (dataset, transfer syntax)."""
    import pydicom
    from pydicom.errors import InvalidDicomError

    fh.seek(0)
    try:
        ds = pydicom.dcmread(fh)
        has_pixels = any(tag in ds for tag in ("PixelData", "FloatPixelData", "DoubleFloatPixelData"))
        meta = getattr(ds, "file_meta", None)
        syntax = meta.get("TransferSyntaxUID") if meta is not None else None
    except MemoryError:
        raise
    except zlib.error as exc:
        reason = "truncated DICOM" if "truncated" in str(exc) else "not a readable DICOM"
        raise _dicom_error(reason, name, exc) from None
    except (InvalidDicomError, *DECODER_ERRORS) as exc:
        raise _dicom_error("not a readable DICOM", name, exc) from None
    except Exception as exc:
        raise _dicom_error("not a readable DICOM", name, exc, "unexpected") from None
    if not has_pixels:
        raise ImageRejected("DICOM without pixel data", name)
    return ds, syntax


def _first_frame(ds, syntax, frames: int, name: str):
    """The pixels of the first frame only, each decoder failure named by its kind."""
    from pydicom.pixels import pixel_array

    syntax_name = getattr(syntax, "name", None) or "unknown transfer syntax"
    try:
        embedded = _embedded_frame_pixels(ds, syntax, frames) if "PixelData" in ds else None
        if embedded is not None and (rejection := _too_large(embedded, name, "the compressed frame's own header")):
            raise rejection
        return pixel_array(ds, index=0 if frames > 1 else None)
    except (ImageRejected, MemoryError):
        raise
    except Image.DecompressionBombError as exc:  # pydicom's Pillow plugin met Pillow's own limit
        raise _dicom_error("image too large", name, exc) from None
    except ValueError as exc:
        message = str(exc).lower()
        if "less than expected" in message or "truncat" in message or "not enough" in message:
            raise _dicom_error("truncated DICOM", name, exc) from None
        raise _dicom_error("undecodable DICOM", name, exc, syntax_name) from None
    except (RuntimeError, NotImplementedError) as exc:
        # pydicom lists the decoders it tried; the transfer syntax tells the user what to install
        raise ImageRejected("undecodable DICOM", f"{name}: {syntax_name} could not be decoded "
                            f"({type(exc).__name__}); a plugin such as pylibjpeg may be missing") from None
    except DECODER_ERRORS as exc:
        raise _dicom_error("undecodable DICOM", name, exc, syntax_name) from None
    except Exception as exc:
        raise _dicom_error("undecodable DICOM", name, exc, f"{syntax_name}, unexpected") from None


def _guarded(path: Path, decode) -> CheckedImage:
    """Run ``decode`` on the opened file; MemoryError becomes a rejection raised outside the
    handler, so the failed decode's frames (and their arrays) are not kept alive by it."""
    try:
        with _open_regular_file(path) as fh:
            return decode(fh)
    except MemoryError:
        pass
    except OSError as exc:  # reading the opened file failed (I/O error)
        raise ImageRejected("unreadable file", f"{path.name}: {type(exc).__name__}") from None
    raise ImageRejected("image too large", f"{path.name}: not enough memory to decode it (MemoryError)")


def decode_dicom(path: str | Path, multi_frame: str = "first") -> CheckedImage:
    """Pixels of a DICOM file as an 8-bit image, displayed the way a viewer would.

    The header is read first and the file refused ("image too large") when rows x columns
    x frames x samples, or the first compressed frame's own size, exceeds MAX_IMAGE_PIXELS;
    a deflated file is never inflated whole before that. Only the first frame is decoded.
    Modality LUT (rescale slope/intercept) first, then the file's own VOI LUT or window if
    it has a usable one, else a percentile window; MONOCHROME1 (bright = low) is inverted
    so bone is white as in every other X-ray; PALETTE COLOR goes through its palette. Only
    the pixel module's elements and Modality are read, and no tag value (patient name, id,
    dates...) reaches an error message or output: details name the file and the exception
    type. ``multi_frame``: "first" takes frame 0 of a multi-frame file, "refuse" rejects it.
    A Modality other than CR/DX is accepted with a warning in ``CheckedImage.warnings``.
    """
    path = Path(path)
    return _guarded(path, lambda fh: _decode_dicom(fh, path.name, multi_frame))


def open_checked(path: str | Path, multi_frame: str = "first") -> CheckedImage:
    """Decode ``path`` fully and normalise it; raise ``ImageRejected`` with a reason."""
    path = Path(path)

    def decode(fh: BinaryIO) -> CheckedImage:
        if _has_dicom_marker(path, fh):
            return _decode_dicom(fh, path.name, multi_frame)
        return _decode_pillow(fh, path.name)

    checked = _guarded(path, decode)
    _check_size(checked.image, path)
    return checked


def decode_image_bytes(data: bytes, name: str) -> CheckedImage:
    """Decode an image held in memory (a server request's data: URL) as ``open_checked`` decodes a
    file: Pillow's raster formats only, the same pixel ceiling; raise ``ImageRejected``."""
    if not data:
        raise ImageRejected("empty file", name)
    try:
        checked = _decode_pillow(io.BytesIO(data), name)
    except MemoryError:
        checked = None  # raised outside the handler, as in _guarded
    if checked is None:
        raise ImageRejected("image too large", f"{name}: not enough memory to decode it (MemoryError)")
    if checked.image.width < 2 or checked.image.height < 2:
        raise ImageRejected("image too small", f"{name}: {checked.image.width}x{checked.image.height}")
    return checked


def _check_size(img: Image.Image, path: Path) -> None:
    if img.width < 2 or img.height < 2:
        raise ImageRejected("image too small", f"{path.name}: {img.width}x{img.height}")
