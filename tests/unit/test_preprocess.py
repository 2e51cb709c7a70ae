import io

import numpy as np
import pytest
import torch
from PIL import Image

from batch_classify.models.registry import LITE0_PRESET, get_spec
from batch_classify.stage.engines import uint8_model
from batch_classify.models.preprocess import ClassificationPreset, DecodeError


def _png(img: Image.Image, fmt="PNG", **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **kw)
    return buf.getvalue()


@pytest.mark.parametrize("size", [(640, 480), (480, 640), (1, 1), (3000, 20), (224, 224)])
def test_output_shape_and_dtype(size):
    out = LITE0_PRESET(_png(Image.new("RGB", size, (10, 20, 30))))
    assert out.shape == (224, 224, 3) and out.dtype == np.uint8


def test_modes_become_rgb():
    gray = LITE0_PRESET(_png(Image.new("L", (300, 300), 128)))
    assert (gray == 128).all()
    rgba = Image.new("RGBA", (300, 300), (255, 0, 0, 0))  # fully transparent red: composited on white
    assert (LITE0_PRESET(_png(rgba)) == 255).all()
    pal = Image.new("RGB", (300, 300), (0, 0, 255)).convert("P")
    assert (LITE0_PRESET(_png(pal))[..., 2] > 250).all()


def test_exif_orientation_applied():
    img = Image.new("RGB", (400, 200), (0, 0, 0))
    img.paste((255, 255, 255), (0, 0, 200, 200))  # left half white
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° clockwise on display: the white half ends on top
    out = LITE0_PRESET(_png(img, "JPEG", exif=exif.tobytes(), quality=95))
    assert out[:40].mean() > 200 and out[-40:].mean() < 50


@pytest.mark.parametrize("data", [b"", b"not an image at all", _png(Image.new("RGB", (64, 64)), "JPEG")[:100]])
def test_undecodable_raises_decode_error(data):
    with pytest.raises(DecodeError):
        LITE0_PRESET(data)


def normalize(x, mean, std):
    """The normalisation the engines put in front of the model."""
    return uint8_model(torch.nn.Identity(), mean, std)(x)


def test_normalize_values():
    x = torch.tensor([[[[0, 255, 128]]]], dtype=torch.uint8)  # [1, 1, 1, 3]
    y = normalize(x, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5))
    assert y.shape == (1, 3, 1, 1) and y.dtype == torch.float32
    assert y.flatten().tolist() == pytest.approx([-1.0, 1.0, 128 / 255 * 2 - 1], abs=1e-6)


def test_lite0_normalisation_is_half_half():
    """EfficientNet-Lite expects [-1, 1] inputs; ImageNet mean/std costs ~12 points of top-1 silently."""
    assert LITE0_PRESET.mean == (0.5, 0.5, 0.5) and LITE0_PRESET.std == (0.5, 0.5, 0.5)
    assert (LITE0_PRESET.resize_size, LITE0_PRESET.crop_size, LITE0_PRESET.interpolation) == (256, 224, "bilinear")


@pytest.mark.parametrize("name", ["resnet152", "efficientnet_b0"])
def test_torchvision_presets_follow_weights_transforms(name, photos):
    """Our uint8 preset + normalize matches the model's own weights.transforms() on real photos."""
    import torchvision

    spec = get_spec(name)
    reference = torchvision.models.get_model_weights(name).DEFAULT.transforms()
    diffs = []
    for path in photos[:20]:
        data = path.read_bytes()
        ours = normalize(torch.from_numpy(spec.preset(data).copy())[None], spec.preset.mean, spec.preset.std)[0]
        theirs = reference(Image.open(io.BytesIO(data)).convert("RGB"))
        assert ours.shape == theirs.shape
        diffs.append((ours - theirs).abs().mean().item())
    # Measured: 0.03 on average (Pillow vs torch antialiasing, DCT-scaled JPEG decoding);
    # a wrong resize size or normalisation gives 0.38-0.44.
    assert sum(diffs) / len(diffs) < 0.06 and max(diffs) < 0.3, diffs


def test_cropped_region_resampling_matches_resize_then_crop(photos):
    """resize_crop resamples only the crop box; it must give the pixels of a full resize then crop."""
    for path in photos[:30]:
        img = LITE0_PRESET.decode(path.read_bytes())
        w, h = img.size
        scale = LITE0_PRESET.resize_size / min(w, h)
        new_w, new_h = round(w * scale), round(h * scale)
        left, top = int(round((new_w - 224) / 2.0)), int(round((new_h - 224) / 2.0))
        full = img.resize((new_w, new_h), Image.Resampling.BILINEAR).crop((left, top, left + 224, top + 224))
        diff = np.abs(LITE0_PRESET.resize_crop(img).astype(int) - np.asarray(full).astype(int))
        assert diff.max() <= 1 and diff.mean() < 0.5, (path.name, diff.max(), diff.mean())


def test_preset_is_keyword_only():
    with pytest.raises(TypeError):
        ClassificationPreset(256, 224, (0.5,) * 3, (0.5,) * 3)  # type: ignore[misc]


def _png_header(width: int, height: int) -> bytes:
    """A PNG whose header says ``width`` × ``height`` (8-bit gray), with one empty IDAT chunk: enough
    for Pillow's ``open``, which reads the header and no pixel."""
    import struct
    import zlib

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)) \
        + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b"")


def test_pixel_limit_message_names_the_documented_limit_even_where_pillow_refuses_first():
    """Above twice Pillow's ``MAX_IMAGE_PIXELS`` Pillow refuses at ``open`` with its own doubled figure
    (178,956,970); the failure names the limit in effect (89,478,485 by default, or the one given)."""
    from batch_classify.models.preprocess import DEFAULT_MAX_PIXELS, DecodeError

    data = _png_header(20_000, 10_000)  # 200,000,000 pixels
    with pytest.raises(DecodeError) as caught:
        LITE0_PRESET.decode(data)
    assert str(caught.value) == (
        f"200,000,000 pixels, over the limit of {DEFAULT_MAX_PIXELS:,} (a decompression bomb, or raise max_image_pixels)"
    )
    with pytest.raises(DecodeError, match="over the limit of 150,000,000"):
        LITE0_PRESET.decode(data, max_pixels=150_000_000)
    with pytest.raises(DecodeError, match="over the limit of 178,956,970"):  # the user's limit is higher: Pillow's stops it
        LITE0_PRESET.decode(data, max_pixels=300_000_000)
    with pytest.raises(DecodeError, match=r"^9000x9000 is 81,000,000 pixels, over the limit of 1,000"):
        LITE0_PRESET.decode(_png_header(9000, 9000), max_pixels=1000)


def _saved(img: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **kw)
    return buf.getvalue()


def _on_white(rgb: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """Independent of the code under test: ``rgb`` (uint8 [H, W, 3]) composited on white by ``alpha`` (uint8 [H, W])."""
    a = alpha[..., None].astype(np.float64) / 255
    return np.round(rgb * a + 255 * (1 - a)).astype(np.uint8)


def _mode_cases(photo: Image.Image) -> dict[str, tuple[bytes, np.ndarray]]:
    """Mode name → (the file in that mode, the same picture as 8-bit RGB, computed without Pillow's
    conversion where one is at issue)."""
    rgb = np.asarray(photo)
    gray = np.asarray(photo.convert("L"))
    alpha = np.tile(np.linspace(0, 255, rgb.shape[1]).astype(np.uint8), (rgb.shape[0], 1))
    palette = photo.quantize(64)
    pal_rgb = np.asarray(palette.convert("RGB"))
    pal_t = palette.copy()
    pal_t.info["transparency"] = int(np.asarray(palette)[0, 0])  # one palette entry transparent
    t_mask = np.where(np.asarray(palette) == np.asarray(palette)[0, 0], 0, 255).astype(np.uint8)
    sixteen = gray.astype(np.uint16) * 257
    return {
        "1": (_saved(photo.convert("1"), "PNG"), np.repeat(np.asarray(photo.convert("1"), dtype=np.uint8)[..., None] * 255, 3, -1)),
        "L": (_saved(photo.convert("L"), "PNG"), np.repeat(gray[..., None], 3, -1)),
        "LA": (_saved(Image.fromarray(np.dstack([gray, alpha]), "LA"), "PNG"), _on_white(np.repeat(gray[..., None], 3, -1), alpha)),
        "RGBA": (_saved(Image.fromarray(np.dstack([rgb, alpha]), "RGBA"), "PNG"), _on_white(rgb, alpha)),
        "P": (_saved(palette, "PNG"), pal_rgb),
        "P with transparency": (_saved(pal_t, "PNG", transparency=pal_t.info["transparency"]), _on_white(pal_rgb, t_mask)),
        "CMYK (TIFF)": (_saved(photo.convert("CMYK"), "TIFF"), rgb),
        "I;16 (PNG)": (_saved(Image.fromarray(sixteen), "PNG"), np.repeat(gray[..., None], 3, -1)),
        "I;16 (TIFF)": (_saved(Image.fromarray(sixteen), "TIFF"), np.repeat(gray[..., None], 3, -1)),
        "I (16-bit PGM)": (_saved(Image.fromarray(sixteen), "PPM"), np.repeat(gray[..., None], 3, -1)),
        "LAB (TIFF)": (_saved(photo.convert("LAB"), "TIFF"), rgb),
        "YCbCr (TIFF)": (_saved(photo.convert("YCbCr"), "TIFF"), rgb),
    }


@pytest.mark.parametrize("mode", ["1", "L", "LA", "RGBA", "P", "P with transparency", "CMYK (TIFF)", "I;16 (PNG)",
                                  "I;16 (TIFF)", "I (16-bit PGM)", "LAB (TIFF)", "YCbCr (TIFF)"])
def test_every_mode_becomes_the_same_picture_as_its_8_bit_rgb_png(mode, photos):
    """A real photo in each mode Pillow opens decodes to the picture that the same photo, made 8-bit RGB
    independently (compositing and 16-bit scaling by hand), decodes to from a PNG: at most 1 level
    apart (for LAB and YCbCr, whose 8-bit channels quantise the colours: at most 8 levels, under 2 on
    average; a black or clipped picture would be off by far more)."""
    photo = Image.open(photos[0]).convert("RGB").resize((200, 150))
    data, expected = _mode_cases(photo)[mode]
    assert Image.open(io.BytesIO(data)).mode == mode.split(" ")[0] or mode.startswith("I (")
    got = np.asarray(LITE0_PRESET.decode(data), dtype=np.int16)
    reference = np.asarray(LITE0_PRESET.decode(_saved(Image.fromarray(expected, "RGB"), "PNG")), dtype=np.int16)
    most, mean = (8, 2) if mode.split(" ")[0] in ("LAB", "YCbCr") else (1, 1)
    off = np.abs(got - reference)
    assert got.shape == reference.shape and off.max() <= most and off.mean() < mean, (off.max(), off.mean())


@pytest.mark.parametrize(("array", "mode"), [
    (np.arange(200 * 150, dtype=np.int32).reshape(150, 200) % 256, "I"),
    (np.arange(200 * 150, dtype=np.int32).reshape(150, 200) * 100_000, "I"),
    (np.linspace(0, 1, 200 * 150, dtype=np.float32).reshape(150, 200), "F"),
])
def test_32_bit_integer_and_float_pictures_fail_naming_the_mode(array, mode):
    """32-bit integer and float TIFFs have no agreed 8-bit scale (they came out black before): they fail
    as that image, naming the mode, whatever range their values use."""
    data = _saved(Image.fromarray(array), "TIFF")
    assert Image.open(io.BytesIO(data)).mode == mode
    with pytest.raises(DecodeError, match=rf"^mode {mode} \(32-bit .* samples, TIFF\) has no agreed scale to 8 bits; "
                                          "save the picture with 8 or 16 bits per sample$"):
        LITE0_PRESET(data)
