"""Images (.png, .jpg, .tiff, .webp) and PDF pages without a text layer, read by OCR.

OCR is RapidOCR (``rapidocr-onnxruntime``: its wheel carries the detection and recognition
models, run on onnxruntime), loaded lazily once per process. The image's size is read from its
header and refused above ``max_image_pixels`` before any pixel is decoded; pages past
``ocr_max_pages`` or the ``ocr_max_seconds`` budget fail the document with the reason.
"""

from __future__ import annotations

import io
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from stratus.errors import PermanentError
from stratus.ingest.formats.safety import Deadline, FormatLimits
from stratus.models import ParsedDocument, Section

if TYPE_CHECKING:
    from PIL.Image import Image

# RapidOCR downscales anyway; a smaller input keeps detection time bounded on one core.
_MAX_SIDE = 2048
_MIN_CONFIDENCE = 0.5
_engine: Any = None
_engine_lock = threading.Lock()


class OcrUnavailable(PermanentError):
    """The OCR packages are not installed where this runs."""


@dataclass
class OcrPage:
    """Text read from one image, with the mean confidence of its lines."""

    text: str
    confidence: float


def _ocr_engine() -> Any:
    global _engine
    with _engine_lock:
        if _engine is None:
            try:
                import numpy  # noqa: F401
                from rapidocr_onnxruntime import RapidOCR
            except ImportError as exc:  # a deployment without the OCR packages (the zip fetch function)
                raise OcrUnavailable(
                    "OCR is not installed in this deployment (rapidocr-onnxruntime)"
                ) from exc
            _engine = RapidOCR()
        return _engine


def ocr_image(image: Image) -> OcrPage:
    """Text lines of one decoded image, top to bottom, with their mean confidence."""
    engine = _ocr_engine()
    import numpy as np

    rgb = image.convert("RGB")
    if max(rgb.size) > _MAX_SIDE:
        rgb.thumbnail((_MAX_SIDE, _MAX_SIDE))
    result, _ = engine(np.asarray(rgb))
    boxes = []
    for box, text, score in result or []:
        if float(score) >= _MIN_CONFIDENCE:
            ys = [p[1] for p in box]
            boxes.append(
                ((min(ys) + max(ys)) / 2, max(ys) - min(ys), min(p[0] for p in box), text, float(score))
            )
    # Reading order: boxes whose centres lie within half a box height share a line, read left to right.
    boxes.sort()
    rows: list[list[tuple[float, float, float, str, float]]] = []
    for item in boxes:
        if rows and abs(item[0] - rows[-1][0][0]) < max(item[1], rows[-1][0][1]) / 2:
            rows[-1].append(item)
        else:
            rows.append([item])
    text = "\n".join(" ".join(b[3] for b in sorted(row, key=lambda b: b[2])) for row in rows)
    confidence = sum(b[4] for b in boxes) / len(boxes) if boxes else 0.0
    return OcrPage(text=text, confidence=round(confidence, 4))


def open_bounded(data: bytes, limits: FormatLimits) -> Image:
    """Open an image lazily and refuse it by its header's size before decoding any pixel."""
    from PIL import Image as PILImage
    from PIL import UnidentifiedImageError

    try:
        image = PILImage.open(io.BytesIO(data))
    except PILImage.DecompressionBombError as exc:  # Pillow's own check, past twice its MAX_IMAGE_PIXELS
        raise PermanentError(
            f"image refused by its header: {exc} "
            f"(STRATUS_FORMAT_MAX_IMAGE_PIXELS is {limits.max_image_pixels})"
        ) from exc
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        raise PermanentError(f"image could not be read: {exc}") from exc
    width, height = image.size
    if width * height > limits.max_image_pixels:
        raise PermanentError(
            f"image is {width} x {height} px; at most {limits.max_image_pixels} pixels allowed "
            "(STRATUS_FORMAT_MAX_IMAGE_PIXELS, decompression bomb?)"
        )
    return image


def _ocr_frames(image: Image, limits: FormatLimits) -> list[tuple[int, OcrPage]]:
    deadline = Deadline(limits.ocr_max_seconds)
    pages: list[tuple[int, OcrPage]] = []
    frames = int(getattr(image, "n_frames", 1) or 1)
    if frames > limits.ocr_max_pages:
        raise PermanentError(
            f"image has {frames} frames; OCR reads at most {limits.ocr_max_pages} (STRATUS_OCR_MAX_PAGES)"
        )
    for index in range(frames):
        if deadline.expired():
            raise PermanentError(
                f"OCR ran past {limits.ocr_max_seconds:.0f} s (STRATUS_OCR_MAX_SECONDS) at frame {index + 1}"
            )
        try:
            image.seek(index)
            image.load()
            page = ocr_image(image)
        except PermanentError:
            raise
        except (OSError, ValueError, SyntaxError, EOFError) as exc:
            raise PermanentError(f"image could not be decoded: {exc}") from exc
        pages.append((index + 1, page))
    return pages


def ocr_metadata(pages: list[tuple[int, OcrPage]]) -> dict[str, str | int | float | bool]:
    """Document metadata that marks OCR'd text: pages read and their mean confidence."""
    read = [p for _, p in pages if p.text]
    confidence = sum(p.confidence for p in read) / len(read) if read else 0.0
    return {"ocr": True, "ocr_pages": len(pages), "ocr_confidence": round(confidence, 4)}


def parse_image(data: bytes, filename: str, limits: FormatLimits) -> ParsedDocument:
    """OCR text of an image (each frame of a multi-page TIFF is a page)."""
    if not limits.ocr_enabled:
        raise PermanentError("image files need OCR, which is turned off (STRATUS_OCR_ENABLED=false)")
    image = open_bounded(data, limits)
    pages = _ocr_frames(image, limits)
    many = len(pages) > 1
    sections = [Section(text=p.text, page=n if many else None) for n, p in pages if p.text]
    if not sections:
        raise PermanentError("OCR found no text in the image")
    return ParsedDocument(title="", sections=sections, metadata=ocr_metadata(pages))


def ocr_pdf_pages(pages: list[tuple[int, Any]], limits: FormatLimits) -> tuple[list[Section], dict[str, Any]]:
    """OCR the embedded images of PDF pages that have no text layer (scans); (sections, metadata)."""
    if not pages:
        return [], {}
    try:
        # Blank pages (no text, no image) are not scans; listing a page's images decodes nothing.
        pages = [(n, p) for n, p in pages if len(p.images)]
    except Exception as exc:  # pypdf raises many kinds of errors on broken resources
        raise PermanentError(f"PDF page images could not be listed: {exc}") from exc
    if not pages:
        return [], {}
    if not limits.ocr_enabled:
        return [], {"ocr_skipped_pages": len(pages)}  # the hit's metadata says pages went unread
    try:
        _ocr_engine()
    except OcrUnavailable:
        return [], {"ocr_skipped_pages": len(pages)}
    if len(pages) > limits.ocr_max_pages:
        raise PermanentError(
            f"PDF has {len(pages)} pages without a text layer; OCR reads at most {limits.ocr_max_pages} "
            "(STRATUS_OCR_MAX_PAGES)"
        )
    deadline = Deadline(limits.ocr_max_seconds)
    sections: list[Section] = []
    read: list[tuple[int, OcrPage]] = []
    for number, page in pages:
        if deadline.expired():
            raise PermanentError(
                f"OCR ran past {limits.ocr_max_seconds:.0f} s (STRATUS_OCR_MAX_SECONDS) at page {number}"
            )
        texts = []
        try:
            for embedded in list(page.images)[:8]:
                ocr = ocr_image(open_bounded(embedded.data, limits))
                if ocr.text:
                    texts.append(ocr)
        except PermanentError:
            raise
        except Exception as exc:  # pypdf/Pillow raise many kinds of errors on broken image streams
            raise PermanentError(f"PDF page {number}: its images could not be read: {exc}") from exc
        if texts:
            text = "\n\n".join(t.text for t in texts)
            confidence = sum(t.confidence for t in texts) / len(texts)
            sections.append(Section(text=text, page=number))
            read.append((number, OcrPage(text, confidence)))
    return sections, (ocr_metadata(read) if read else {})
