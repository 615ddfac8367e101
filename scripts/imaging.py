"""Open, check and normalise medical images so they reach the model as 8-bit pictures.

Shared by the converter, batch inference and the demo: one place decides what a
readable image is and why a file is refused.

ms-swift opens images with Pillow and calls ``.convert("RGB")``. That is right for
8-bit RGB/grayscale files but wrong for the others an X-ray archive holds: a 16-bit
grayscale PNG is clipped to 255 (a white square), a palette or RGBA file keeps
transparency artefacts, CMYK colours shift. ``normalise`` turns each of those into a
plain 8-bit image; files already in ``L`` or ``RGB`` are passed through untouched so
the converter can point at the original file instead of writing a copy.
"""
from __future__ import annotations

from dataclasses import dataclass
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


def open_checked(path: str | Path) -> CheckedImage:
    """Decode ``path`` fully and normalise it; raise ``ImageRejected`` with a reason."""
    path = Path(path)
    if not path.exists():
        raise ImageRejected("missing image", str(path))
    if not path.is_file():
        raise ImageRejected("not a file", str(path))
    if path.stat().st_size == 0:
        raise ImageRejected("empty file", str(path))
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
    if norm.width < 2 or norm.height < 2:
        raise ImageRejected("image too small", f"{path.name}: {norm.width}x{norm.height}")
    return CheckedImage(image=norm, source_mode=source_mode, changed=changed)
