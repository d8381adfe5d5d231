"""Images for Llama 3.2 Vision: load from a URL, a path, bytes or a PIL image; shrink to what the
model uses; encode as a base64 data URL; refuse payloads the predict route would reject."""

from __future__ import annotations

import base64
import io
import json
import math
from pathlib import Path
from typing import Any

from nbhelpers.errors import ConfigError
from nbhelpers.limits import PREDICT_PAYLOAD_BYTES

TILE = 560  # Llama 3.2 Vision sees an image as up to 4 tiles of 560 x 560 pixels
MAX_TILES = 4
USER_AGENT = "nbhelpers/0.1 (Llama on Vertex AI notebooks; python-requests)"
FORMATS = ("JPEG", "PNG")


def load_image(source: Any, *, timeout_s: float = 30) -> Any:
    """Returns a PIL image from a URL (fetched with a User-Agent: some hosts answer 403 without
    one), a data URL, a local path, raw bytes, or a PIL image."""
    from PIL import Image, UnidentifiedImageError

    if isinstance(source, Image.Image):
        return source
    if isinstance(source, (bytes, bytearray)):
        data, where = bytes(source), "the given bytes"
    elif isinstance(source, str) and source.startswith("data:"):
        header, _, encoded = source.partition(",")
        if ";base64" not in header:
            raise ConfigError("data URL must be base64-encoded (data:image/...;base64,...)")
        data, where = base64.b64decode(encoded), "the data URL"
    elif isinstance(source, str) and source.startswith(("http://", "https://")):
        import requests

        response = requests.get(source, headers={"User-Agent": USER_AGENT}, timeout=timeout_s)
        if response.status_code != 200:
            raise ConfigError(
                f"could not fetch image {source!r}: HTTP {response.status_code}. Download it "
                "yourself and pass the local path, or pass a data URL."
            )
        data, where = response.content, source
    elif isinstance(source, (str, Path)):
        path = Path(source).expanduser()
        if not path.is_file():
            raise ConfigError(f"image file {str(path)!r} does not exist")
        data, where = path.read_bytes(), str(path)
    else:
        raise ConfigError(
            f"unsupported image source of type {type(source).__name__}; give a URL, a data URL, "
            "a file path, bytes or a PIL image"
        )
    try:
        image = Image.open(io.BytesIO(data))
        image.load()
    except (UnidentifiedImageError, OSError) as err:
        raise ConfigError(f"{where} is not an image Pillow can read: {err}") from None
    return image


def fit_to_tiles(image: Any, *, tile: int = TILE, max_tiles: int = MAX_TILES) -> Any:
    """Downscales (never upscales) until the image covers at most `max_tiles` tiles: pixels
    beyond that are resized away by the model's processor anyway, and only cost payload."""
    width, height = image.size
    scale = 1.0
    while math.ceil(width * scale / tile) * math.ceil(height * scale / tile) > max_tiles:
        scale *= 0.95
    if scale < 1.0:
        image = image.resize((max(1, int(width * scale)), max(1, int(height * scale))))
    return image


def encode(image: Any, *, image_format: str = "JPEG", quality: int = 90) -> bytes:
    fmt = image_format.upper()
    if fmt not in FORMATS:
        raise ConfigError(f"unknown image format {image_format!r}; choose one of JPEG, PNG")
    if fmt == "JPEG" and image.mode not in ("RGB", "L"):
        image = image.convert("RGB")
    out = io.BytesIO()
    image.save(out, format=fmt, **({"quality": quality} if fmt == "JPEG" else {}))
    return out.getvalue()


def to_data_url(source: Any, *, image_format: str = "JPEG", quality: int = 90,
                max_tiles: int = MAX_TILES) -> str:
    """Loads, fits to the model's tiles, and encodes an image as a base64 data URL."""
    image = fit_to_tiles(load_image(source), max_tiles=max_tiles)
    mime = "image/jpeg" if image_format.upper() == "JPEG" else "image/png"
    data = encode(image, image_format=image_format, quality=quality)
    return f"data:{mime};base64,{base64.b64encode(data).decode()}"


def check_payload(body: dict[str, Any], limit: int = PREDICT_PAYLOAD_BYTES) -> int:
    """Raises before sending when the JSON request exceeds the online prediction limit."""
    size = len(json.dumps(body).encode())
    if size > limit:
        raise ConfigError(
            f"the request is {size:,} bytes, over the {limit:,}-byte online prediction limit. "
            "Shrink the images: encode as JPEG with a lower quality (e.g. quality=70), fewer "
            "tiles (max_tiles=1 is 560 x 560 px), or send fewer images or prompts per request."
        )
    return size


def sample_image(width: int = 800, height: int = 600) -> Any:
    """A picture drawn here (no network needed): three shapes on a sky, for rehearsals."""
    from PIL import Image, ImageDraw

    image = Image.new("RGB", (width, height), (135, 190, 235))
    draw = ImageDraw.Draw(image)
    draw.rectangle((0, height * 2 // 3, width, height), fill=(70, 150, 70))
    draw.ellipse((width * 0.7, height * 0.08, width * 0.85, height * 0.28), fill=(250, 210, 60))
    draw.polygon([(width * 0.15, height * 0.67), (width * 0.3, height * 0.35),
                  (width * 0.45, height * 0.67)], fill=(150, 90, 60))
    draw.rectangle((width * 0.5, height * 0.45, width * 0.65, height * 0.67), fill=(200, 50, 50))
    return image
