"""Images out of an OpenAI chat body: `image_url` data URLs, decoded and checked, scaled to a resolution.

Only `data:` URLs are taken: the OCR server fetches nothing from anywhere.
"""

from __future__ import annotations

import base64
import binascii
import io
from dataclasses import dataclass
from typing import Any

from PIL import Image, UnidentifiedImageError


class BadInput(Exception):
    """The request cannot be read: answered 400 with this message."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


@dataclass(frozen=True, slots=True)
class ChatInput:
    """What a chat request asks for: its images (encoded bytes) and the words of its text parts."""

    images: list[bytes]
    prompt_words: int


def chat_input(body: Any) -> ChatInput:
    """The images of the user messages, in order; BadInput when there is none or one is malformed."""
    if not isinstance(body, dict):
        raise BadInput("request body must be a JSON object (an OpenAI chat completion request)")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise BadInput("messages is required: a list with a user message holding an image_url part")
    images: list[bytes] = []
    words = 0
    for message in messages:
        if not isinstance(message, dict):
            raise BadInput("each message must be an object")
        content = message.get("content")
        if isinstance(content, str):
            words += len(content.split())
        elif isinstance(content, list):
            for part in content:
                words += _part(part, images)
    if not images:
        raise BadInput("no image: send one as a content part {\"type\": \"image_url\", "
                       "\"image_url\": {\"url\": \"data:image/png;base64,...\"}}")
    return ChatInput(images, words)


def _part(part: Any, images: list[bytes]) -> int:
    """Collect an image part into `images`; the number of words of a text part."""
    if not isinstance(part, dict):
        raise BadInput("each content part must be an object")
    kind = part.get("type")
    if kind == "text":
        text = part.get("text")
        return len(text.split()) if isinstance(text, str) else 0
    if kind == "image_url":
        ref = part.get("image_url")
        url = ref.get("url") if isinstance(ref, dict) else ref
        images.append(decode_data_url(url, len(images) + 1))
    return 0


def decode_data_url(url: Any, number: int) -> bytes:
    """The bytes of a `data:image/...;base64,` URL."""
    if not isinstance(url, str) or not url.startswith("data:"):
        raise BadInput(f"image {number}: image_url.url must be a data: URL (data:image/png;base64,...); "
                       "this server fetches nothing")
    head, comma, data = url.partition(",")
    if not comma or not head.endswith(";base64"):
        raise BadInput(f"image {number}: the data URL must be base64 (data:image/png;base64,...)")
    try:
        return base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        raise BadInput(f"image {number}: the data URL is not valid base64") from None


def decoded(data: bytes, number: int, max_pixels: int) -> Image.Image:
    """An RGB image; BadInput for bytes that are no image, or one over `max_pixels`."""
    try:
        image = Image.open(io.BytesIO(data))
        width, height = image.size
        if width * height > max_pixels:
            raise BadInput(f"image {number}: {width}x{height} is more than {max_pixels} pixels")
        return _on_white(image)
    except (UnidentifiedImageError, OSError, Image.DecompressionBombError, SyntaxError, ValueError):
        raise BadInput(f"image {number}: not a readable image (PNG, JPEG, WebP, ...)") from None


def _on_white(image: Image.Image) -> Image.Image:
    """RGB; a transparent background becomes white (dark text on transparency stays readable)."""
    if image.mode in ("RGBA", "LA", "PA") or "transparency" in image.info:
        rgba = image.convert("RGBA")
        white = Image.new("RGB", rgba.size, "white")
        white.paste(rgba, mask=rgba.getchannel("A"))
        return white
    return image.convert("RGB")


def scaled(image: Image.Image, limit: int) -> Image.Image:
    """The image with its longest side at most `limit` pixels (0: as it is).

    This is the resolution a profile chooses: the detector and the recognizer see this image,
    so a small limit is faster and loses small print, as a smaller vision encoder would."""
    if limit and max(image.size) > limit:
        image = image.copy()
        image.thumbnail((limit, limit), Image.Resampling.LANCZOS)
    return image
