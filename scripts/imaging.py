"""Open, check and normalise medical images so they reach the model as 8-bit pictures.

Shared by the converter, batch inference and the demo: one place decides what a
readable image is and why a file is refused. PNG, JPEG, TIFF, BMP go through
Pillow; DICOM goes through pydicom (see ``decode_dicom``).

ms-swift opens images with Pillow and calls ``.convert("RGB")``. That is right for
8-bit RGB/grayscale files but wrong for the others an X-ray archive holds: a 16-bit
grayscale PNG is clipped to 255 (a white square), a palette or RGBA file keeps
transparency artefacts, CMYK colours shift. ``normalise`` turns each of those into a
plain 8-bit image; files already in ``L`` or ``RGB`` are passed through untouched so
the converter can point at the original file instead of writing a copy.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

# Modes that ms-swift's ``convert("RGB")`` already handles faithfully.
PASS_THROUGH_MODES = {"L", "RGB"}


class ImageRejected(ValueError):
    """A file that cannot be used as an image; ``reason`` is a short stable label."""

    def __init__(self, reason: str, detail: str = ""):
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


@dataclass
class CheckedImage:
    image: Image.Image  # decoded, normalised to L or RGB
    source_mode: str  # the mode the file had on disk
    changed: bool  # True when normalisation altered the pixels or mode
    # Accepted, but the user should know (e.g. a DICOM whose modality is not a radiograph);
    # converters count and list them, batch inference and the demo show them.
    warnings: list[str] = field(default_factory=list)


def _rescale_to_uint8(arr: np.ndarray) -> np.ndarray:
    """Linear window from the 0.5th to the 99.5th percentile to 0..255.

    A plain min/max stretch lets one burnt-in marker or a black border flatten the
    lungs into a few grey levels; clipping the extreme half-percent keeps contrast.
    """
    arr = arr.astype(np.float64)
    lo, hi = np.percentile(arr, [0.5, 99.5])
    if hi <= lo:  # flat image: keep it flat rather than divide by zero
        lo, hi = float(arr.min()), float(arr.max()) or 1.0
    if hi <= lo:
        return np.zeros(arr.shape, dtype=np.uint8)
    out = (np.clip(arr, lo, hi) - lo) * (255.0 / (hi - lo))
    return np.round(out).astype(np.uint8)


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


def is_dicom(path: Path) -> bool:
    """DICOM Part 10 files carry "DICM" after a 128-byte preamble; some archives drop the preamble."""
    if path.suffix.lower() in (".dcm", ".dicom"):
        return True
    with open(path, "rb") as fh:
        return fh.read(132)[128:132] == b"DICM"


def decode_dicom(path: Path, multi_frame: str = "first") -> CheckedImage:
    """Pixels of a DICOM file as an 8-bit image, displayed the way a viewer would.

    Modality LUT (rescale slope/intercept) first, then the file's own VOI LUT or
    window if it has one, else a percentile window; MONOCHROME1 (bright = low) is
    inverted so bone is white as in every other X-ray. Only pixel data is read: no
    tag value (patient name, id, dates...) ever reaches an error message or output.
    ``multi_frame``: "first" takes frame 0 of a multi-frame file, "refuse" rejects it.
    """
    import pydicom
    from pydicom.errors import InvalidDicomError
    from pydicom.pixels import apply_modality_lut, apply_voi_lut

    try:
        ds = pydicom.dcmread(path)
    except (InvalidDicomError, EOFError, OSError, ValueError) as exc:
        raise ImageRejected("not a readable DICOM", f"{path.name}: {type(exc).__name__}") from None
    if not any(tag in ds for tag in ("PixelData", "FloatPixelData", "DoubleFloatPixelData")):
        raise ImageRejected("DICOM without pixel data", path.name)
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    if frames > 1 and multi_frame == "refuse":
        raise ImageRejected("multi-frame DICOM", f"{path.name}: {frames} frames")
    meta = getattr(ds, "file_meta", None)
    syntax = meta.get("TransferSyntaxUID") if meta is not None else None
    syntax_name = getattr(syntax, "name", str(syntax or "unknown"))
    try:
        arr = ds.pixel_array if frames == 1 else ds.pixel_array[0]
    except ValueError as exc:
        if "less than expected" in str(exc) or "truncat" in str(exc).lower():
            raise ImageRejected("truncated DICOM", path.name) from None
        raise ImageRejected("undecodable DICOM", f"{path.name}: {syntax_name}") from None
    except (RuntimeError, NotImplementedError, AttributeError) as exc:
        # pydicom lists the decoders it tried; the transfer syntax tells the user what to install
        raise ImageRejected("undecodable DICOM", f"{path.name}: {syntax_name} could not be decoded "
                            f"({type(exc).__name__}); a plugin such as pylibjpeg may be missing") from None
    photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2")).upper()
    if arr.ndim == 3 and arr.shape[-1] in (3, 4):  # colour (pydicom converts YBR to RGB)
        rgb = arr[..., :3]
        if rgb.dtype != np.uint8:
            rgb = _rescale_to_uint8(rgb)
        return CheckedImage(Image.fromarray(np.ascontiguousarray(rgb), mode="RGB"), f"DICOM {photometric}", True)
    if arr.ndim != 2:
        raise ImageRejected("undecodable DICOM", f"{path.name}: pixel array of shape {arr.shape}")
    values = apply_modality_lut(arr, ds)
    windowed = "WindowCenter" in ds or "VOILUTSequence" in ds
    if windowed:
        values = apply_voi_lut(values, ds, index=0)
        lo, hi = float(np.min(values)), float(np.max(values))
        scaled = np.zeros(values.shape, np.uint8) if hi <= lo else \
            np.round((values.astype(np.float64) - lo) * (255.0 / (hi - lo))).astype(np.uint8)
    else:
        scaled = _rescale_to_uint8(values)
    if photometric == "MONOCHROME1":
        scaled = 255 - scaled
    return CheckedImage(Image.fromarray(scaled, mode="L"), f"DICOM {photometric}", True)


def open_checked(path: str | Path, multi_frame: str = "first") -> CheckedImage:
    """Decode ``path`` fully and normalise it; raise ``ImageRejected`` with a reason."""
    path = Path(path)
    if not path.exists():
        raise ImageRejected("missing image", str(path))
    if not path.is_file():
        raise ImageRejected("not a file", str(path))
    if path.stat().st_size == 0:
        raise ImageRejected("empty file", str(path))
    if is_dicom(path):
        checked = decode_dicom(path, multi_frame)
        _check_size(checked.image, path)
        return checked
    try:
        with Image.open(path) as img:
            img.load()  # a full decode is the only way to catch truncated pixel data
            source_mode = img.mode
            norm, changed = normalise(img)
            if norm is img:
                norm = img.copy()  # detach from the closed file
    except UnidentifiedImageError:
        raise ImageRejected("not an image", path.name) from None
    except (OSError, SyntaxError) as exc:  # Pillow raises OSError for truncation
        msg = str(exc)
        reason = "truncated image" if "truncat" in msg.lower() else "unreadable image"
        raise ImageRejected(reason, f"{path.name}: {msg}") from None
    except Image.DecompressionBombError as exc:
        raise ImageRejected("image too large", f"{path.name}: {exc}") from None
    _check_size(norm, path)
    return CheckedImage(image=norm, source_mode=source_mode, changed=changed)


def _check_size(img: Image.Image, path: Path) -> None:
    if img.width < 2 or img.height < 2:
        raise ImageRejected("image too small", f"{path.name}: {img.width}x{img.height}")
