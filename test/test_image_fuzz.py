"""Seeded fuzz of scripts/imaging.open_checked: over a thousand mutated PNG, JPEG, TIFF, BMP and
DICOM files, plus crafted bombs, each either opens (an L or RGB image) or is refused with
ImageRejected; nothing else escapes, and peak memory stays bounded.

The files are generated here from the bundled X-rays (downscaled) and pydicom's own test
files, then decoded in a child process whose address space is capped (RLIMIT_AS), so a
runaway allocation shows as a MemoryError (which must itself be a rejection) and the
child's peak RSS is the honest measure of what one hostile file can cost.
"""
from __future__ import annotations

import io
import json
import os
import random
import struct
import subprocess
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pydicom
from PIL import Image
from pydicom.data import get_testdata_file
from pydicom.uid import DeflatedExplicitVRLittleEndian, RLELossless

from helpers import (BUNDLED_IMAGES, PYTHON, ROOT, image_dataset, png_declaring, with_meta_group_length_2,
                     with_rows_length_3, write_deflated_dicom)


SEED = 20251125
MUTANTS = 2000
ADDRESS_SPACE_LIMIT = 2 * 2**30  # the child imports Pillow, numpy and pydicom in about 180 MB of it
PEAK_RSS_LIMIT = 768 * 2**20

FUZZ_PATIENT = ("Fuzzington^Ada", "FZ-7731", "19470312")
DICOM_TEST_FILES = ["CT_small.dcm", "MR_small.dcm", "MR_small_RLE.dcm", "MR_small_bigendian.dcm",
                    "MR_small_implicit.dcm", "SC_rgb_jpeg.dcm", "SC_rgb_jpeg_dcmtk.dcm", "MR_small_jp2klossless.dcm",
                    "MR_small_jpeg_ls_lossless.dcm", "SC_rgb_rle_2frame.dcm", "image_dfl.dcm", "rtdose_rle.dcm"]


def encoded(img: Image.Image, fmt: str, **options) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **options)
    return buf.getvalue()


def dicom_bytes(ds) -> bytes:
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


def radiograph_dicom(gray: np.ndarray, transfer_syntax=None) -> bytes:
    """A bundled X-ray as a DX DICOM, as a detector would write it (12 bits in 16)."""
    ds = pydicom.Dataset()
    ds.file_meta = pydicom.dataset.FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = pydicom.uid.ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = pydicom.uid.DigitalXRayImageStorageForPresentation
    entropy = [f"fuzz {gray.shape} {int(gray.sum())}"]  # the same UID, so the same bytes, every run
    ds.file_meta.MediaStorageSOPInstanceUID = pydicom.uid.generate_uid(entropy_srcs=entropy)
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID
    ds.Modality = "DX"
    ds.PatientName, ds.PatientID, ds.PatientBirthDate = FUZZ_PATIENT
    ds.Rows, ds.Columns = gray.shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.PixelData = (gray.astype(np.uint16) * 16).tobytes()
    if transfer_syntax == RLELossless:
        ds.compress(RLELossless, encoding_plugin="pydicom")
    elif transfer_syntax is not None:
        ds.file_meta.TransferSyntaxUID = transfer_syntax
    return dicom_bytes(ds)


def seed_files() -> dict[str, bytes]:
    """Small, valid files of every supported kind: the material the mutations start from."""
    seeds: dict[str, bytes] = {}
    for index, name in enumerate(["2_1.png", "1425_2.png", "348_2.png"]):
        side = (64, 96, 128)[index]
        gray = Image.open(BUNDLED_IMAGES / name).convert("L").resize((side, side))
        rgb = gray.convert("RGB")
        deep = Image.fromarray(np.asarray(gray).astype(np.uint16) * 257)
        seeds[f"{index}_l.png"] = encoded(gray, "PNG")
        seeds[f"{index}_rgb.png"] = encoded(rgb, "PNG")
        seeds[f"{index}_16bit.png"] = encoded(deep, "PNG")
        seeds[f"{index}_palette.png"] = encoded(gray.convert("P"), "PNG")
        seeds[f"{index}_l.jpg"] = encoded(gray, "JPEG", quality=85)
        seeds[f"{index}_progressive.jpg"] = encoded(rgb, "JPEG", progressive=True)
        seeds[f"{index}_raw.tif"] = encoded(gray, "TIFF")
        seeds[f"{index}_lzw.tif"] = encoded(rgb, "TIFF", compression="tiff_lzw")
        seeds[f"{index}_deflate16.tif"] = encoded(deep, "TIFF", compression="tiff_adobe_deflate")
        seeds[f"{index}_packbits.tif"] = encoded(gray, "TIFF", compression="packbits")
        seeds[f"{index}_l.bmp"] = encoded(gray, "BMP")
        seeds[f"{index}_rgb.bmp"] = encoded(rgb, "BMP")
        seeds[f"{index}_dx.dcm"] = radiograph_dicom(np.asarray(gray))
        seeds[f"{index}_dx_rle.dcm"] = radiograph_dicom(np.asarray(gray), RLELossless)
        seeds[f"{index}_dx_deflated.dcm"] = radiograph_dicom(np.asarray(gray), DeflatedExplicitVRLittleEndian)
    for name in DICOM_TEST_FILES:
        seeds[name] = Path(get_testdata_file(name)).read_bytes()
    return seeds


def mutate(rng: random.Random, data: bytes, is_dicom: bool) -> tuple[str, bytes]:
    out = bytearray(data)
    header = min(len(out), 2048 if is_dicom else 512)
    how = rng.choice(["flip", "flip", "header", "truncate", "splice", "insert", "huge"])
    if how == "flip":
        for _ in range(rng.randint(1, 16)):
            out[rng.randrange(len(out))] ^= 1 << rng.randrange(8)
    elif how == "header":
        for _ in range(rng.randint(1, 4)):
            out[rng.randrange(header)] = rng.choice([0x00, 0xFF, 0x7F, 0x80, rng.randrange(256)])
    elif how == "truncate":
        del out[rng.randrange(1, len(out)):]
    elif how == "splice":  # a chunk lost or doubled: every later length and offset is wrong
        start = rng.randrange(len(out))
        chunk = out[start:start + rng.randint(1, 256)]
        if rng.random() < 0.5:
            del out[start:start + len(chunk)]
        else:
            out[start:start] = chunk
    elif how == "insert":
        at = rng.randrange(len(out))
        out[at:at] = rng.randbytes(rng.randint(1, 64))
    else:  # a size or length field turned huge
        at = rng.randrange(max(1, header - 4))
        out[at:at + 4] = rng.choice([b"\xff\xff\xff\xff", b"\x7f\xff\xff\xff", b"\x00\x00\xff\xff", b"\xff\xff"])
    return how, bytes(out)


def tiff_declaring(size: tuple[int, int], data: bytes) -> bytes:
    """A little-endian TIFF from Pillow with ImageWidth/ImageLength (tags 256/257) rewritten."""
    out = bytearray(data)
    assert out[:4] == b"II*\0"
    ifd = struct.unpack_from("<I", out, 4)[0]
    for entry in range(struct.unpack_from("<H", out, ifd)[0]):
        at = ifd + 2 + 12 * entry
        tag, kind = struct.unpack_from("<HH", out, at)
        if tag in (256, 257):
            value = size[0] if tag == 256 else size[1]
            out[at + 2:at + 12] = struct.pack("<HII", 4, 1, value)  # LONG, one value
    return bytes(out)


def crafted_files(seeds: dict[str, bytes], tmp: Path) -> dict[str, bytes]:
    """Hand-made hostile files: huge declared sizes, wrong lengths, not images at all."""
    crafted: dict[str, bytes] = {}
    small_png = tmp / "small.png"
    small_png.write_bytes(seeds["0_l.png"])
    crafted["bomb_png_warning_zone.png"] = png_declaring((10000, 9000), small_png)
    crafted["bomb_png_huge.png"] = png_declaring((100000, 100000), small_png)
    crafted["zero_width.png"] = png_declaring((0, 64), small_png)
    bmp = bytearray(seeds["0_l.bmp"])
    bmp[18:26] = struct.pack("<ii", 30000, 30000)
    crafted["bomb_bmp.bmp"] = bytes(bmp)
    crafted["bomb_tiff.tif"] = tiff_declaring((50000, 50000), seeds["0_raw.tif"])
    jpeg = seeds["0_l.jpg"]
    sof = jpeg.index(b"\xff\xc0")
    crafted["bomb_jpeg.jpg"] = jpeg[:sof + 5] + struct.pack(">HH", 60000, 60000) + jpeg[sof + 9:]
    # DICOM: declared geometry far beyond the pixel data, in the header and in a JPEG frame
    for keyword, value in (("Rows", 16000), ("NumberOfFrames", "100000"), ("SamplesPerPixel", 65535)):
        ds = pydicom.dcmread(io.BytesIO(seeds["MR_small.dcm"]))
        setattr(ds, keyword, value)
        if keyword == "Rows":
            ds.Columns = 16000
        crafted[f"bomb_dicom_{keyword}.dcm"] = dicom_bytes(ds)
    deflated = tmp / "deflated_bomb.dcm"
    write_deflated_dicom(deflated, image_dataset(16000, 16000), 16000 * 16000)
    crafted["bomb_dicom_deflated.dcm"] = deflated.read_bytes()
    raw = seeds["SC_rgb_jpeg.dcm"]
    sof = raw.index(b"\xff\xc0\x00\x11\x08")
    crafted["bomb_dicom_jpeg_frame.dcm"] = raw[:sof + 5] + struct.pack(">HH", 60000, 60000) + raw[sof + 9:]
    mr = seeds["MR_small.dcm"]
    pixel_tag = mr.rindex(b"\xe0\x7f\x10\x00OW\x00\x00")
    crafted["wrong_pixel_length.dcm"] = mr[:pixel_tag + 8] + b"\xf0\xff\xff\xff" + mr[pixel_tag + 12:]
    crafted["wrong_rows_length.dcm"] = with_rows_length_3(mr)
    crafted["wrong_meta_length.dcm"] = with_meta_group_length_2(seeds["CT_small.dcm"])
    crafted["marker_only.img"] = b"\0" * 128 + b"DICM"
    crafted["text.png"] = b"a report, not a picture\n"
    crafted["text.dcm"] = b"a report, not a DICOM\n"
    crafted["one_byte.jpg"] = b"\xff"
    crafted["empty.bmp"] = b""
    crafted["dicom_without_suffix.img"] = seeds["0_dx.dcm"]
    return crafted


CHILD = r"""
import gc, json, resource, sys, time
resource.setrlimit(resource.RLIMIT_AS, (int(sys.argv[3]),) * 2)
from pathlib import Path
from PIL import Image
from medswift.core.images import CheckedImage, ImageRejected, open_checked
outcomes, texts, slowest = {}, [], (0.0, "")
started = time.perf_counter()
for path in sorted(Path(sys.argv[2]).iterdir()):
    print("decoding", path.name, file=sys.stderr, flush=True)  # names the culprit if the child dies
    began, escaped = time.perf_counter(), None
    try:
        checked = open_checked(path)
        ok = (isinstance(checked, CheckedImage) and isinstance(checked.image, Image.Image)
              and checked.image.mode in ("L", "RGB") and min(checked.image.size) >= 2
              and all(isinstance(w, str) for w in checked.warnings))
        outcomes[path.name] = "opened" if ok else "BAD RESULT"
        texts.extend(checked.warnings)
    except ImageRejected as exc:
        outcomes[path.name] = "refused: " + exc.reason
        texts.append(str(exc))
    except BaseException as exc:
        escaped = type(exc)  # no allocation here: the live traceback may still hold the memory
    if escaped is not None:
        gc.collect()  # frames of the failed decode may sit in reference cycles
        outcomes[path.name] = "ESCAPED " + escaped.__name__
    checked = None
    slowest = max(slowest, (time.perf_counter() - began, path.name))
def peak_rss_bytes():
    # VmHWM is this process's own peak. ru_maxrss is not: Linux carries the parent's peak over
    # fork and exec, so a child of a pytest process that loaded a model would report that.
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


print(json.dumps({"outcomes": outcomes, "texts": texts, "seconds": time.perf_counter() - started, "slowest": slowest,
                  "maxrss_bytes": peak_rss_bytes()}))
"""


def test_fuzzed_images_open_or_are_refused(tmp_path):
    started = time.perf_counter()
    rng = random.Random(SEED)
    seeds = seed_files()
    names = sorted(seeds)
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    kinds: Counter = Counter()
    for number in range(MUTANTS):
        seed_name = names[number % len(names)]
        suffix = Path(seed_name).suffix
        how, data = mutate(rng, seeds[seed_name], suffix == ".dcm")
        (corpus / f"m{number:04d}_{how}_{Path(seed_name).stem}{suffix}").write_bytes(data)
        kinds[suffix] += 1
    crafted = crafted_files(seeds, tmp_path)
    for name, data in crafted.items():
        (corpus / f"crafted_{name}").write_bytes(data)
    (corpus / "crafted_folder.png").mkdir()
    generated = time.perf_counter() - started

    env = {**os.environ, "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([PYTHON, "-c", CHILD, str(ROOT), str(corpus), str(ADDRESS_SPACE_LIMIT)],
                          capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(proc.stdout.splitlines()[-1])
    outcomes: dict[str, str] = report["outcomes"]
    tally = Counter(outcomes.values())
    summary = {"files": len(outcomes), "mutants by suffix": dict(kinds), "crafted": len(crafted) + 1,
               "opened": tally["opened"],
               "refused": {k[len("refused: "):]: v for k, v in sorted(tally.items()) if k.startswith("refused")},
               "peak RSS MB": round(report["maxrss_bytes"] / 2**20), "decode seconds": round(report["seconds"], 1),
               "generate seconds": round(generated, 1), "slowest file": report["slowest"]}
    print(json.dumps(summary, indent=1))

    bad = {name: outcome for name, outcome in outcomes.items()
           if outcome != "opened" and not outcome.startswith("refused: ")}
    assert not bad, f"escaped or bad results: {bad}"
    assert len(outcomes) >= 1000 and min(kinds[s] for s in (".png", ".jpg", ".tif", ".bmp", ".dcm")) >= 100
    assert tally["opened"] > 0 and len(outcomes) - tally["opened"] > 0, "the fuzz must exercise both outcomes"
    for name, outcome in outcomes.items():
        if name.startswith("crafted_bomb_"):
            assert outcome == "refused: image too large", (name, outcome)
    assert outcomes["crafted_folder.png"] == "refused: not a file"
    assert outcomes["crafted_dicom_without_suffix.img"] == "opened"
    assert report["maxrss_bytes"] < PEAK_RSS_LIMIT, summary
    # no patient identifier from any header reaches a rejection detail or a warning
    identifiers = set(FUZZ_PATIENT)
    for name in DICOM_TEST_FILES:
        ds = pydicom.dcmread(get_testdata_file(name), stop_before_pixels=True)
        identifiers |= {str(ds.get(k, "")) for k in ("PatientName", "PatientID", "PatientBirthDate", "StudyDate")}
    identifiers = {i for i in identifiers if len(i.strip("^ ")) > 3}
    assert len(identifiers) > 5
    leaks = [(i, t) for t in report["texts"] for i in identifiers if i in t]
    assert not leaks, leaks[:5]
