"""The headless LoadImage gives what ComfyUI's core LoadImage gives (nodes.py): EXIF orientation, palette
transparency, every mode and bit depth scaled as ComfyUI scales it, multi-frame files; unreadable files are refused
by name; our own image inputs refuse empty batches and masks without an object, and warn about small images."""
import logging

import numpy as np
import pytest
import torch
from PIL import Image

from geodream_pack.geodream_ops.errors import GeoDreamError
from geodream_pack.nodes.multiview import GeoDreamMultiViewGenerate
from headless.core_nodes import LoadImage


def load(folder, name):
    """Through the headless core node, as a workflow runs it (files come from the input folder)."""
    assert (folder / name).is_file()
    return LoadImage().load(name)


def test_exif_rotation_is_applied(pack_dirs):
    """The issue's example: an 8x4 JPEG tagged "rotate 90" loads 8 high and 4 wide. Orientation 6 turns the
    stored image clockwise, so its dark left half becomes the top."""
    pixels = np.zeros((4, 8, 3), np.uint8)
    pixels[:, 4:] = 255
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(pixels).save(pack_dirs["input"] / "phone.jpg", exif=exif, quality=100)
    image, mask = load(pack_dirs["input"], "phone.jpg")
    assert image.shape == (1, 8, 4, 3) and mask.shape == (1, 64, 64) and not mask.any()
    assert image[0, :3].mean() < 0.1 and image[0, 5:].mean() > 0.9


def test_palette_transparency_becomes_the_mask(pack_dirs):
    """The issue's example: a 4x4 palette PNG whose index 0 is transparent, 15 pixels of index 0."""
    indices = np.zeros((4, 4), np.uint8)
    indices[2, 1] = 1
    image = Image.fromarray(indices, "P")
    image.putpalette([10, 20, 30, 200, 100, 0] + [0] * 762)
    image.save(pack_dirs["input"] / "palette.png", transparency=0)
    rgb, mask = load(pack_dirs["input"], "palette.png")
    expected = torch.ones(1, 4, 4)
    expected[0, 2, 1] = 0
    assert torch.equal(mask, expected) and int(mask.sum()) == 15
    assert rgb[0, 2, 1].tolist() == pytest.approx([200 / 255, 100 / 255, 0])
    assert rgb[0, 0, 0].tolist() == pytest.approx([10 / 255, 20 / 255, 30 / 255])


@pytest.mark.parametrize("mode,stored,expected_rgb", [
    ("L", [0, 128, 255], [[0] * 3, [128 / 255] * 3, [1] * 3]),
    ("CMYK", [(255, 0, 0, 0), (0, 0, 0, 255), (0, 0, 0, 0)], [[0, 1, 1], [0, 0, 0], [1, 1, 1]]),
    # 16-bit grey: ComfyUI converts straight to RGB, which saturates at 255
    ("I;16", [0, 200, 65535], [[0] * 3, [200 / 255] * 3, [1] * 3]),
    # 32-bit integers: ComfyUI divides by 255 first
    ("I", [0, 255 * 100, 255 * 300], [[0] * 3, [100 / 255] * 3, [1] * 3]),
])
def test_modes_and_bit_depths_scale_as_comfyui(pack_dirs, mode, stored, expected_rgb):
    if mode == "CMYK":
        image = Image.new("CMYK", (3, 1))
        for x, value in enumerate(stored):
            image.putpixel((x, 0), value)
        name = "cmyk.jpg"
        image.save(pack_dirs["input"] / name, quality=100)
    else:
        dtype = {"L": np.uint8, "I;16": np.uint16, "I": np.int32}[mode]
        image = Image.fromarray(np.array([stored], dtype=dtype))
        assert image.mode == mode
        name = f"grey-{mode.replace(';', '')}.{'tif' if mode == 'I' else 'png'}"
        image.save(pack_dirs["input"] / name)
    rgb, mask = load(pack_dirs["input"], name)
    tolerance = 2 / 255 if mode == "CMYK" else 1e-6  # JPEG's CMYK is lossy
    assert rgb.shape == (1, 1, 3, 3) and mask.shape == (1, 64, 64)
    assert rgb[0, 0].tolist() == [pytest.approx(row, abs=tolerance) for row in expected_rgb]


def test_grey_alpha_and_rgba_give_one_minus_alpha(pack_dirs):
    alpha = np.array([[0, 64, 255]], np.uint8)
    Image.fromarray(np.stack([np.full_like(alpha, 90), alpha], -1), "LA").save(pack_dirs["input"] / "la.png")
    Image.fromarray(np.concatenate([np.full((1, 3, 3), 7, np.uint8), alpha[..., None]], -1), "RGBA").save(
        pack_dirs["input"] / "rgba.png")
    for name, grey in (("la.png", 90), ("rgba.png", 7)):
        rgb, mask = load(pack_dirs["input"], name)
        assert torch.allclose(mask, 1 - torch.tensor([[[0, 64, 255]]]) / 255)
        assert torch.allclose(rgb, torch.full((1, 1, 3, 3), grey / 255))


def test_frames_of_the_first_size_are_batched(pack_dirs):
    frames = [Image.new("RGB", (4, 4), (60 * k, 0, 0)) for k in range(3)] + [Image.new("RGB", (6, 6))]
    frames[0].save(pack_dirs["input"] / "frames.tif", save_all=True, append_images=frames[1:])
    rgb, mask = load(pack_dirs["input"], "frames.tif")
    assert rgb.shape == (3, 4, 4, 3) and mask.shape == (3, 64, 64)
    assert rgb[:, 0, 0, 0].tolist() == pytest.approx([0, 60 / 255, 120 / 255])


def test_unreadable_files_are_refused_by_name(pack_dirs):
    (pack_dirs["input"] / "notes.png").write_text("not an image")
    with pytest.raises(GeoDreamError, match=r"could not read the image '.*notes\.png'"):
        load(pack_dirs["input"], "notes.png")
    # A PNG cut short still loads, as ComfyUI's truncated-image retry allows.
    Image.new("RGB", (64, 64), (255, 0, 0)).save(pack_dirs["input"] / "whole.png")
    data = (pack_dirs["input"] / "whole.png").read_bytes()
    (pack_dirs["input"] / "cut.png").write_bytes(data[: len(data) - 20])
    rgb, _ = load(pack_dirs["input"], "cut.png")
    assert rgb.shape == (1, 64, 64, 3)


def test_zero123plus_input_refuses_empty_or_batched_images_and_masks_without_object():
    image, size = torch.rand(1, 40, 40, 3), 32
    with pytest.raises(GeoDreamError, match="image input is empty"):
        GeoDreamMultiViewGenerate._object_image(torch.zeros(0, 40, 40, 3), None, size)
    with pytest.raises(GeoDreamError, match="batch of 2.*Image From Batch"):
        GeoDreamMultiViewGenerate._object_image(torch.rand(2, 40, 40, 3), None, size)
    with pytest.raises(GeoDreamError, match="mask input is empty"):
        GeoDreamMultiViewGenerate._object_image(image, torch.zeros(0, 40, 40), size)
    with pytest.raises(GeoDreamError, match="leaves no object visible"):
        GeoDreamMultiViewGenerate._object_image(image, torch.ones(1, 40, 40), size)


def test_small_object_warns_that_it_is_upscaled(caplog):
    mask = torch.ones(1, 40, 40)
    mask[0, 10:20, 10:20] = 0  # a 10 px object: a 13 px square at 75% fill
    with caplog.at_level(logging.WARNING, logger="GeoDream"):
        out = GeoDreamMultiViewGenerate._object_image(torch.rand(1, 40, 40, 3), mask, 32)
    assert out.shape == (32, 32, 3)
    assert "13 px square, smaller than Zero123++'s 32 px input" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="GeoDream"):
        GeoDreamMultiViewGenerate._object_image(torch.rand(1, 40, 40, 3), None, 32)
    assert "smaller than" not in caplog.text
