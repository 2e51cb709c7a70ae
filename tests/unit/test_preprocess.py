import io

import numpy as np
import pytest
import torch
from PIL import Image

from batch_classify.models import LITE0_PRESET, get_spec
from batch_classify.engines import uint8_model
from batch_classify.preprocess import ClassificationPreset, DecodeError


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
    from batch_classify.preprocess import DEFAULT_MAX_PIXELS, DecodeError

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
