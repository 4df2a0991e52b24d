"""The OCR engine: RapidOCR's PP-OCRv4 detector and recognizer (ONNX, CPU), loaded once.

RapidOCR's own `limit_side_len` only applies with its `min` limit type (which enlarges small
images), so the resolution is applied here instead: the image is scaled to its limit first
(`images.scaled`) and the detector runs at that size (`det_limit_type: max` keeps it, up to
RapidOCR's 2000 px ceiling for the detector's input; boxes map back to the whole image).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from PIL import Image


@dataclass(frozen=True, slots=True)
class Line:
    """One recognized line of text and the recognizer's confidence."""

    text: str
    score: float


class Engine:
    """`threads` is onnxruntime's intra-op thread count per model (0: its default, every core)."""

    def __init__(self, threads: int = 0) -> None:
        # Imported here, in the loading thread: the server already answers /health (503) while
        # onnxruntime and OpenCV import and the models load.
        from rapidocr_onnxruntime import RapidOCR

        count = threads if threads > 0 else -1
        self._ocr: Any = RapidOCR(det_limit_type="max", max_side_len=1_000_000,
                                  intra_op_num_threads=count, inter_op_num_threads=count)

    def read(self, image: Image.Image) -> list[Line]:
        """The text lines of an RGB image, top to bottom (empty when there is no text)."""
        result, _ = self._ocr(image)
        if not result:
            return []
        return [Line(str(text), float(score)) for _, text, score in result]
