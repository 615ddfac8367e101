"""scripts/imaging.py against hostile and broken files: every failure is an ImageRejected with a
reason, bombs are refused from the header, non-radiograph DICOMs carry a warning.

Every fixture is generated here (seeded or deterministic) from the bundled X-rays and
pydicom's own test files; nothing binary is committed.
"""
from __future__ import annotations

import ctypes
import io
import json
import os
import re
import struct
import subprocess
import time
import tracemalloc
from pathlib import Path

import numpy as np
import pydicom
import pytest
from PIL import Image
from pydicom.uid import DeflatedExplicitVRLittleEndian

from helpers import (BUNDLED_IMAGES, PYTHON, ROOT, dcm, image_dataset, png_declaring, with_meta_group_length_2,
                     with_rows_length_3, write_deflated_dicom)
from medswift.core import images as imaging
from medswift.core.images import MAX_IMAGE_PIXELS, REASONS, ImageRejected, open_checked


def xray(size: int = 64) -> Image.Image:
    img = Image.open(BUNDLED_IMAGES / "2_1.png").convert("L")
    return img.resize((size, size))


def rejection(path, **kwargs) -> ImageRejected:
    with pytest.raises(ImageRejected) as err:
        open_checked(path, **kwargs)
    assert err.value.reason in REASONS, err.value.reason
    return err.value


# --------------------------------------------------------------------------- Pillow formats
def test_truncated_tiff_is_a_truncated_image(tmp_path):
    buf = io.BytesIO()
    xray().save(buf, "TIFF")
    whole = buf.getvalue()
    for cut in (200, len(whole) // 2, len(whole) - 10):  # Pillow: "ValueError: buffer is not large enough"
        path = tmp_path / f"cut{cut}.tif"
        path.write_bytes(whole[:cut])
        assert rejection(path).reason == "truncated image"


@pytest.mark.parametrize("factor", [1.01, 1.9, 3.0])  # 1x-2x: Pillow only warns; above 2x it raises
def test_png_over_the_pixel_limit_is_refused_before_decoding(tmp_path, factor):
    small = tmp_path / "small.png"
    xray().save(small)
    side = int((MAX_IMAGE_PIXELS * factor) ** 0.5) + 1
    path = tmp_path / "big.png"
    path.write_bytes(png_declaring((side, side), small))
    started = time.process_time()  # CPU time, whatever else shares the machine
    err = rejection(path)
    assert err.reason == "image too large", err  # decoding first would have said "truncated image"
    assert time.process_time() - started < 1.0


def test_pixel_limit_is_pillows():
    assert MAX_IMAGE_PIXELS == Image.MAX_IMAGE_PIXELS == 89_478_485


# --------------------------------------------------------------------------- malformed DICOMs
def with_window_width(raw: bytes, text: bytes) -> bytes:
    at = raw.index(b"\x28\x00\x51\x10DS")
    length = int.from_bytes(raw[at + 6:at + 8], "little")
    value = text + b" " * (len(text) % 2)
    return raw[:at + 6] + len(value).to_bytes(2, "little") + value + raw[at + 8 + length:]


def zero_deflate_codes(raw: bytes) -> bytes:
    """Four zero bytes early in image_dfl.dcm's deflate stream: "invalid ..." (zlib error -3)."""
    return raw[:400] + bytes(4) + raw[404:]


MALFORMED = {
    # name: (source file, mutation, expected reason); each raised a raw exception before
    "rows_wrong_length": ("MR_small.dcm", with_rows_length_3, "not a readable DICOM"),  # BytesLengthException
    "meta_wrong_length": ("CT_small.dcm", with_meta_group_length_2, "not a readable DICOM"),  # BytesLengthException
    "number_of_frames_1A": ("badVR.dcm", None, "not a readable DICOM"),  # ValueError (pydicom's own test file)
    "deflate_stream_cut": ("image_dfl.dcm", lambda raw: raw[: len(raw) * 2 // 3], "truncated DICOM"),  # zlib.error
    "deflate_stream_corrupt": ("image_dfl.dcm", zero_deflate_codes, "not a readable DICOM"),  # zlib.error
}


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_malformed_dicom_is_refused_with_a_reason(tmp_path, case):
    source, mutate, reason = MALFORMED[case]
    raw = dcm(source).read_bytes()
    path = tmp_path / f"{case}.dcm"
    path.write_bytes(mutate(raw) if mutate else raw)
    err = rejection(path)
    assert err.reason == reason, err
    # file name and exception type only: pydicom's messages quote raw element bytes
    assert re.fullmatch(rf"{re.escape(path.name)}: [^:]*\(\w+\)", err.detail), err.detail


@pytest.mark.parametrize("width", [b"abc", b"0"])  # TypeError / ValueError inside apply_voi_lut before
def test_unusable_window_falls_back_with_a_warning(tmp_path, width):
    path = tmp_path / "window.dcm"
    path.write_bytes(with_window_width(dcm("MR_small.dcm").read_bytes(), width))
    checked = open_checked(path)
    arr = np.asarray(checked.image)
    assert checked.image.mode == "L" and arr.std() > 20
    assert any("window" in w for w in checked.warnings), checked.warnings


def odd_variant(tmp_path: Path, source: str, **values) -> Path:
    ds = pydicom.dcmread(dcm(source))
    for keyword, value in values.items():
        setattr(ds, keyword, value)
    path = tmp_path / ("_".join(f"{k}-{v}" for k, v in values.items()).replace(" ", "") + ".dcm")
    ds.save_as(path, enforce_file_format=False)
    return path


@pytest.mark.parametrize("source, values, outcome", [
    # one sample but a colour interpretation: ValueError from the windowing before
    ("MR_small.dcm", {"PhotometricInterpretation": "RGB"}, "L"),
    ("MR_small_RLE.dcm", {"PhotometricInterpretation": "RGB"}, "L"),
    # palette colour without a palette: ValueError before
    ("MR_small.dcm", {"PhotometricInterpretation": "PALETTE COLOR"}, "undecodable DICOM"),
    # more frames declared than encoded: StopIteration from pydicom's frame generator before
    ("SC_rgb_rle_2frame.dcm", {"NumberOfFrames": "3"}, "RGB"),
    ("MR_small_RLE.dcm", {"NumberOfFrames": "3"}, "L"),
])
def test_odd_dicom_geometry_opens_or_is_refused(tmp_path, source, values, outcome):
    path = odd_variant(tmp_path, source, **values)
    if outcome in REASONS:
        assert rejection(path).reason == outcome
    else:
        checked = open_checked(path)
        assert checked.image.mode == outcome
        if values.get("PhotometricInterpretation") == "RGB":
            assert any("photometric" in w for w in checked.warnings), checked.warnings


def test_palette_colour_dicom_goes_through_its_palette():
    checked = open_checked(dcm("examples_palette.dcm"))
    assert checked.image.mode == "RGB"
    arr = np.asarray(checked.image).astype(int)
    assert np.abs(arr[..., 0] - arr[..., 2]).mean() > 5, "colours, not palette indices shown as grey"


# --------------------------------------------------------------------------- bombs
def test_deflated_dicom_bomb_is_refused_from_its_header(tmp_path):
    path = tmp_path / "bomb.dcm"
    write_deflated_dicom(path, image_dataset(16000, 16000), 16000 * 16000)
    assert path.stat().st_size < 400_000  # 256 MB of pixels in a few hundred KB
    tracemalloc.start()
    started = time.process_time()  # CPU time: what decoding would cost, whatever else shares the machine
    try:
        err = rejection(path)
        elapsed = time.process_time() - started
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert err.reason == "image too large", err
    assert "16000x16000" in err.detail
    assert elapsed < 0.5, elapsed
    assert peak < 16 * 2**20, f"{peak / 2**20:.0f} MB allocated: the pixels were inflated"


def test_small_deflated_dicoms_decode(tmp_path):
    built = tmp_path / "built.dcm"
    write_deflated_dicom(built, image_dataset(64, 48), 64 * 48)
    checked = open_checked(built)
    assert checked.image.size == (48, 64) and checked.warnings == []
    # pydicom writing MR_small deflated: same picture as the original
    ds = pydicom.dcmread(dcm("MR_small.dcm"))
    resaved = tmp_path / "mr_deflated.dcm"
    ds.file_meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian
    ds.save_as(resaved)
    assert pydicom.dcmread(resaved).file_meta.TransferSyntaxUID == DeflatedExplicitVRLittleEndian
    assert np.array_equal(np.asarray(open_checked(resaved).image), np.asarray(open_checked(dcm("MR_small.dcm")).image))
    assert open_checked(dcm("image_dfl.dcm")).image.size == (512, 512)


def test_deflated_dicom_inflating_far_beyond_its_header_is_refused(tmp_path):
    path = tmp_path / "padded.dcm"
    write_deflated_dicom(path, image_dataset(64, 64), 64 * 64, padding_bytes=100 * 2**20)
    assert path.stat().st_size < 300_000
    err = rejection(path)
    assert err.reason == "image too large" and "inflates" in err.detail, err


def test_jpeg_frame_declaring_more_than_its_dicom_header_is_refused(tmp_path):
    raw = dcm("SC_rgb_jpeg.dcm").read_bytes()
    sof = raw.index(b"\xff\xc0\x00\x11\x08")  # baseline SOF: length 17, 8-bit precision
    assert raw[sof + 5:sof + 9] == struct.pack(">HH", 256, 256)
    path = tmp_path / "jpeg_bomb.dcm"
    path.write_bytes(raw[:sof + 5] + struct.pack(">HH", 60000, 60000) + raw[sof + 9:])
    started = time.process_time()  # CPU time, whatever else shares the machine
    err = rejection(path)
    assert err.reason == "image too large" and "compressed frame" in err.detail, err
    assert time.process_time() - started < 1.0  # decoding it took 18 s and 3.8 GB


# --------------------------------------------------------------------------- modality warning
WARNING_CT = "DICOM modality CT is not a radiograph (CR/DX); the model was trained on chest X-rays"


def test_non_radiograph_modality_is_accepted_with_a_warning(tmp_path):
    checked = open_checked(dcm("CT_small.dcm"))
    assert checked.image.mode == "L" and checked.warnings == [WARNING_CT]
    ds = pydicom.dcmread(dcm("CT_small.dcm"))
    for modality in ("DX", "CR"):
        ds.Modality = modality
        path = tmp_path / f"{modality}.dcm"
        ds.save_as(path)
        assert open_checked(path).warnings == [], modality
    del ds.Modality
    path = tmp_path / "no_modality.dcm"
    ds.save_as(path)
    assert open_checked(path).warnings == []
    # a value that is no code string is not echoed: it could be anything, a name included
    raw = dcm("CT_small.dcm").read_bytes()
    at = raw.index(b"\x08\x00\x60\x00CS\x02\x00CT")
    path = tmp_path / "odd_modality.dcm"
    path.write_bytes(raw[:at] + b"\x08\x00\x60\x00CS\x0a\x00Doe^John\x00\x00" + raw[at + 10:])
    warnings = open_checked(path).warnings
    assert len(warnings) == 1 and "Doe" not in warnings[0] and "not a radiograph" in warnings[0]


# --------------------------------------------------------------------------- files
def drop_file_read_override() -> None:
    """In the child, before exec: drop root's CAP_DAC_OVERRIDE and CAP_DAC_READ_SEARCH from the
    bounding set, so mode bits bind root as they bind any user."""
    libc = ctypes.CDLL(None, use_errno=True)
    for capability in (1, 2):
        if libc.prctl(24, capability, 0, 0, 0) != 0:  # PR_CAPBSET_DROP
            raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP)")


def test_permission_denied_is_an_unreadable_file(tmp_path):
    path = tmp_path / "locked.png"
    xray().save(path)
    path.chmod(0)
    try:
        if os.geteuid() != 0:
            err = rejection(path)
            outcome = [err.reason, err.detail]
        else:
            # chmod does not stop root: run the check where root has lost the override
            snippet = ("import json, sys\n"
                       "sys.path.insert(0, sys.argv[1] + '/scripts')  # this checkout's library\n"
                       "from medswift.core.images import ImageRejected, open_checked\n"
                       "try:\n    open_checked(sys.argv[2]); print(json.dumps(['opened', '']))\n"
                       "except ImageRejected as e:\n    print(json.dumps([e.reason, e.detail]))\n")
            try:
                proc = subprocess.run([PYTHON, "-c", snippet, str(ROOT), str(path)], capture_output=True,
                                      text=True, timeout=60, preexec_fn=drop_file_read_override)
            except (OSError, subprocess.SubprocessError) as exc:
                pytest.skip(f"running as root and cannot drop CAP_DAC_OVERRIDE here: {exc}")
            assert proc.returncode == 0, proc.stderr[-2000:]
            outcome = json.loads(proc.stdout.splitlines()[-1])
    finally:
        path.chmod(0o644)
    assert outcome == ["unreadable file", "locked.png: unreadable (Permission denied)"]


def test_odd_paths_are_refused(tmp_path):
    folder = tmp_path / "x.png"
    folder.mkdir()
    assert rejection(folder).reason == "not a file"  # held before too
    fifo = tmp_path / "pipe.png"
    os.mkfifo(fifo)
    assert rejection(fifo).reason == "not a file"  # must not block on the open
    assert rejection(tmp_path / ("n" * 300 + ".png")).reason == "unreadable file"  # OSError before
    assert rejection(str(tmp_path / "nul\0.png")).reason == "not a file"  # ValueError before
    assert rejection(tmp_path / "gone.png").reason == "missing image"


def test_a_file_removed_while_it_is_decoded_still_decodes(tmp_path, monkeypatch):
    path = tmp_path / "vanishing.png"
    xray().save(path)
    real_open = Image.open

    def removed_first(fp, *args, **kwargs):  # the file is deleted at the worst moment
        if path.exists():
            path.unlink()
        return real_open(fp, *args, **kwargs)

    monkeypatch.setattr(imaging.Image, "open", removed_first)
    checked = open_checked(path)  # what was checked is what gets decoded: the open file
    assert not path.exists() and checked.image.size == (64, 64)


def test_memory_error_is_a_rejection(tmp_path):
    """A real MemoryError: a 16-bit 4000x4000 PNG (16 M pixels, under the limit) in a process
    whose address space leaves no room for its float64 rescale."""
    path = tmp_path / "deep.png"
    Image.fromarray(np.zeros((4000, 4000), dtype=np.uint16)).save(path)
    snippet = ("import json, resource, sys\n"
               "from medswift.core.images import ImageRejected, open_checked\n"
               "import pydicom.pixels\n"
               "size = int(open('/proc/self/statm').read().split()[0]) * resource.getpagesize()\n"
               "resource.setrlimit(resource.RLIMIT_AS, (size + 120 * 2**20,) * 2)\n"
               "try:\n    open_checked(sys.argv[2]); print(json.dumps(['opened', '']))\n"
               "except ImageRejected as e:\n    print(json.dumps([e.reason, e.detail]))\n")
    env = {**os.environ, "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([PYTHON, "-c", snippet, str(ROOT), str(path)], capture_output=True, text=True,
                          timeout=120, env=env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert json.loads(proc.stdout.splitlines()[-1]) == ["image too large",
                                                        "deep.png: not enough memory to decode it (MemoryError)"]
