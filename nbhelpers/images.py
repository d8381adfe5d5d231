"""Images for Llama 3.2 Vision: load from a URL, a path, bytes or a PIL image; shrink to what the
model uses; encode as a base64 data URL; refuse payloads the predict route would reject."""

from __future__ import annotations

import base64
import binascii
import io
import json
import math
from pathlib import Path
from typing import Any

from nbhelpers import checks
from nbhelpers.checks import shown
from nbhelpers.errors import ConfigError
from nbhelpers.limits import predict_payload_bytes

TILE = 560  # Llama 3.2 Vision sees an image as up to 4 tiles of 560 x 560 pixels
MAX_TILES = 4
USER_AGENT = "nbhelpers/0.1 (Llama on Vertex AI notebooks; python-requests)"
FORMATS = ("JPEG", "PNG")
MAX_FETCH_S = 600  # a URL that takes longer is not one a notebook should wait for
MAX_SIDE = 8192  # of a drawn sample: 67 Mpx, under Pillow's decompression-bomb limit (89 Mpx)
_SOURCES = "a URL, a data URL, a file path, bytes or a PIL image"


def load_image(source: Any, *, timeout_s: float = 30) -> Any:
    """Returns a PIL image from a URL (fetched with a User-Agent: some hosts answer 403 without
    one), a data URL, a local path, raw bytes, or a PIL image. Whatever cannot be read is a
    ConfigError naming the source, so a bad IMAGE stops the plan cell before anything is
    deployed."""
    from PIL import Image, UnidentifiedImageError

    checks.number("timeout_s", timeout_s, low=0, high=MAX_FETCH_S, low_open=True,
                  why="seconds to wait for a URL")
    if isinstance(source, Image.Image):
        return source
    if isinstance(source, str | Path):
        checks.text("image source", str(source))
    if isinstance(source, bytes | bytearray):
        data, where = bytes(source), "image source (the given bytes)"
    elif isinstance(source, str) and source.startswith("data:"):
        header, _, encoded = source.partition(",")
        if ";base64" not in header:
            raise ConfigError(f"image source {shown(source)} is a data URL that is not "
                              "base64-encoded; write data:image/...;base64,...")
        try:
            data = base64.b64decode(encoded, validate=True)
        except (binascii.Error, ValueError) as err:
            raise ConfigError(f"image source {shown(source)} is a data URL whose base64 is "
                              f"broken: {err}") from None
        where = "image source (the data URL)"
    elif isinstance(source, str) and source.startswith(("http://", "https://")):
        data, where = _fetch(source, timeout_s), f"image source {shown(source)}"
    elif isinstance(source, str | Path):
        try:
            path = Path(source).expanduser()
            found = path.is_file()
            data = path.read_bytes() if found else b""
        except (OSError, ValueError) as err:  # too long a name, a NUL byte, no permission
            raise ConfigError(f"image source {shown(str(source))} is not a readable file: "
                              f"{err}") from None
        if not found:
            raise ConfigError(f"image source {shown(str(path))}: the file does not exist; give "
                              f"{_SOURCES}")
        where = f"image source {shown(str(path))}"
    else:
        raise ConfigError(f"image source of type {type(source).__name__} is not supported; "
                          f"give {_SOURCES}")
    try:
        image = Image.open(io.BytesIO(data))
        image.load()
    except (UnidentifiedImageError, OSError, Image.DecompressionBombError,
            ValueError) as err:
        raise ConfigError(f"{where} is not an image Pillow can read: {err}") from None
    return image


def _fetch(url: str, timeout_s: float) -> bytes:
    import requests

    try:
        response = requests.get(url, headers={"User-Agent": USER_AGENT}, timeout=timeout_s)
    except requests.RequestException as err:
        raise ConfigError(f"could not fetch image source {shown(url)}: {type(err).__name__}. "
                          "Download it yourself and pass the local path, or pass a data URL."
                          ) from None
    if response.status_code != 200:
        raise ConfigError(
            f"could not fetch image source {shown(url)}: HTTP {response.status_code}. Download "
            "it yourself and pass the local path, or pass a data URL."
        )
    return response.content


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


def check_encoding(*, image_format: Any, quality: Any, max_tiles: Any = MAX_TILES) -> str:
    """Checks how an image is to be encoded (before it is loaded or fetched); returns the
    format in upper case."""
    if not isinstance(image_format, str) or image_format.upper() not in FORMATS:
        raise ConfigError(f"unknown image format {shown(image_format)} (image_format); choose one "
                          "of JPEG, PNG")
    checks.whole("quality", quality, low=1, high=100, why="JPEG quality")
    checks.whole("max_tiles", max_tiles, low=1, high=MAX_TILES,
                 why=f"tiles of {TILE} x {TILE} px the model reads")
    return image_format.upper()


def encode(image: Any, *, image_format: str = "JPEG", quality: int = 90) -> bytes:
    fmt = check_encoding(image_format=image_format, quality=quality)
    if fmt == "JPEG" and image.mode not in ("RGB", "L"):
        image = image.convert("RGB")
    out = io.BytesIO()
    image.save(out, format=fmt, **({"quality": quality} if fmt == "JPEG" else {}))
    return out.getvalue()


def to_data_url(source: Any, *, image_format: str = "JPEG", quality: int = 90,
                max_tiles: int = MAX_TILES) -> str:
    """Loads, fits to the model's tiles, and encodes an image as a base64 data URL."""
    fmt = check_encoding(image_format=image_format, quality=quality, max_tiles=max_tiles)
    image = fit_to_tiles(load_image(source), max_tiles=max_tiles)
    mime = "image/jpeg" if fmt == "JPEG" else "image/png"
    data = encode(image, image_format=image_format, quality=quality)
    return f"data:{mime};base64,{base64.b64encode(data).decode()}"


def check_payload(body: dict[str, Any], *, dedicated: bool = False) -> int:
    """Raises before sending when the JSON request exceeds the online prediction limit of the
    endpoint's type (shared 1.5 MB, dedicated 10 MB: `limits.predict_payload_bytes`)."""
    checks.flag("dedicated", dedicated)
    size = len(json.dumps(body).encode())
    limit = predict_payload_bytes(dedicated=dedicated)
    if size > limit:
        larger = "" if dedicated else (
            f", or use a dedicated endpoint (it takes "
            f"{predict_payload_bytes(dedicated=True):,} bytes)")
        raise ConfigError(
            f"the request is {size:,} bytes, over the {limit:,}-byte online prediction limit "
            f"of a {'dedicated' if dedicated else 'shared'} endpoint. Shrink the images: encode "
            "as JPEG with a lower quality (e.g. quality=70), fewer tiles (max_tiles=1 is 560 x "
            f"560 px), or send fewer images or prompts per request{larger}."
        )
    return size


def sample_image(width: int = 800, height: int = 600) -> Any:
    """A picture drawn here (no network needed): three shapes on a sky, for rehearsals."""
    checks.whole("width", width, low=1, high=MAX_SIDE, why="pixels")
    checks.whole("height", height, low=1, high=MAX_SIDE, why="pixels")
    from PIL import Image, ImageDraw

    image = Image.new("RGB", (width, height), (135, 190, 235))
    draw = ImageDraw.Draw(image)
    draw.rectangle((0, height * 2 // 3, width, height), fill=(70, 150, 70))
    draw.ellipse((width * 0.7, height * 0.08, width * 0.85, height * 0.28), fill=(250, 210, 60))
    draw.polygon([(width * 0.15, height * 0.67), (width * 0.3, height * 0.35),
                  (width * 0.45, height * 0.67)], fill=(150, 90, 60))
    draw.rectangle((width * 0.5, height * 0.45, width * 0.65, height * 0.67), fill=(200, 50, 50))
    return image
