"""Views reach the prior on white as the release feeds it: background found (flat grey without a model, or rembg's
U²-Net through onnxruntime, fed BGR as the release's cv2 passes feed it), alpha <= 128 -> pure white, kept pixels as they
were (rembg: its cut-out, RGB x alpha)."""
import numpy as np
import pytest
import torch
from PIL import Image

from geodream_pack.geodream_ops.multiview import matting
from geodream_pack.geodream_ops.errors import GeoDreamError
from geodream_pack.geodream_ops.multiview.zero123plus import merge_grid, split_grid
from geodream_pack.nodes.multiview import u2net_path
from geodream_pack.nodes.prior import GeoDreamBuildCostVolume

from tests.twins_rembg import twin_weights, write_u2net

GREY = 127.0 / 255.0


def _tile_grid(tile=40, seed=0):
    """A Zero123++-style 3x2 grid: each tile a coloured object on the flat grey, the object holding a patch of that
    very grey (which is object, not background: it does not reach the border). Returns the grid and the object
    masks [6, T, T] by construction."""
    g = torch.Generator().manual_seed(seed)
    tiles, objects = [], []
    yy, xx = torch.meshgrid(torch.arange(tile), torch.arange(tile), indexing="ij")
    for k in range(6):
        cy, cx, r = 14 + k, 20 - k, 9 + k % 3
        inside = (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r
        colour = torch.rand(tile, tile, 3, generator=g)  # textured; its red channel keeps it far from the grey
        colour[..., 0] = 0.8 + 0.2 * colour[..., 0]
        colour[(yy - cy).abs() + (xx - cx).abs() <= 2] = GREY  # grey inside the object
        view = torch.where(inside[..., None], colour, torch.full((tile, tile, 3), GREY))
        tiles.append(view)
        objects.append(inside)
    return merge_grid(torch.stack(tiles)), torch.stack(objects)


def test_zero123plus_grey_tiles_come_out_on_white_with_the_object_unchanged():
    grid, objects = _tile_grid()
    tiles = split_grid(grid)
    views, masks, used = matting.matte_views(tiles, "flat background")
    assert used == "flat background"
    assert torch.equal(masks.bool(), ~objects)  # the background exactly, grey inside the object kept
    assert torch.equal(views[objects], tiles[objects])  # object pixels bit-identical
    assert (views[~objects] == 1.0).all()  # background pure white


def test_flat_background_tolerates_the_generators_noise():
    grid, objects = _tile_grid(seed=1)
    noise = (torch.rand(grid.shape, generator=torch.Generator().manual_seed(2)) - 0.5) * (8 / 255)
    tiles = split_grid((grid + noise).clamp(0, 1))
    masks = matting.flat_background_mask(tiles)
    assert torch.equal(masks.bool(), ~objects)


def _rgba_view():
    """A 4x4 view whose alpha steps across the release's threshold (128 of 255)."""
    rgb = torch.rand(1, 4, 4, 3, generator=torch.Generator().manual_seed(3))
    alpha8 = torch.tensor([[0, 1, 127, 128], [129, 130, 200, 255], [255, 255, 0, 64], [128, 129, 255, 255]])
    return rgb, alpha8


def test_transparent_view_is_composited_onto_white_by_the_release_rule():
    rgb, alpha8 = _rgba_view()
    expected = rgb.clone()
    expected[0][alpha8 <= 128] = 1.0  # rank_and_resize.py: output[alpha <= 128, :3] = 255, the rest untouched
    rgba = torch.cat([rgb, (alpha8.float() / 255)[None, ..., None]], -1)
    assert torch.equal(matting.views_on_white(rgba), expected)
    # The same through LoadImage's MASK (1 - alpha) on Build Cost Volume's mask input.
    loadimage_mask = 1.0 - alpha8.float()[None] / 255
    assert torch.equal(matting.views_on_white(rgb, loadimage_mask), expected)
    # An all-zero mask (LoadImage's placeholder for an image without alpha) changes nothing.
    assert torch.equal(matting.views_on_white(rgb, torch.zeros(1, 64, 64)), rgb)


def test_a_view_without_foreground_is_named():
    views = torch.rand(3, 8, 8, 3, generator=torch.Generator().manual_seed(4)) * 0.5
    masks = torch.zeros(3, 8, 8)
    masks[2] = 1.0
    with pytest.raises(GeoDreamError, match="view 2 has no foreground"):
        matting.views_on_white(views, masks)
    views[1] = 1.0
    with pytest.raises(GeoDreamError, match="view 1 is blank white"):
        matting.views_on_white(views)
    with pytest.raises(GeoDreamError, match=r"the mask is \(5, 5\) but the views are \(8, 8\)"):
        matting.views_on_white(views, torch.ones(3, 5, 5))
    with pytest.raises(GeoDreamError, match="2 masks for 3 views"):
        matting.views_on_white(views, torch.ones(2, 8, 8))


def test_build_cost_volume_names_the_empty_view(pack_dirs):
    views = torch.rand(2, 16, 16, 3, generator=torch.Generator().manual_seed(5)) * 0.5
    mask = torch.zeros(2, 16, 16)
    mask[1] = 1.0
    from geodream_pack.geodream_ops import cameras as C
    from tests.twins_prior import random_prior
    with pytest.raises(GeoDreamError, match="view 1 has no foreground"):
        GeoDreamBuildCostVolume().build(random_prior(), views, C.mvdream_rig()[[0, 1]], 16, 8, "dense", mask=mask)


def _rembg_alpha_by_hand(view, seed=0):
    """rembg's U2netSession.predict with the twin's network written out in numpy, on the array the release hands
    it: ``cv2.imread``'s, BGR (t2i_single.py, rank_and_resize.py), which rembg's Image.fromarray takes for RGB."""
    bgr = (view.numpy() * 255).round().astype(np.uint8)[..., ::-1].copy()
    image = Image.fromarray(bgr)
    small = np.asarray(image.resize((320, 320), Image.Resampling.LANCZOS), dtype=np.float64)
    small = small / small.max()
    small = (small - np.array([0.485, 0.456, 0.406])) / np.array([0.229, 0.224, 0.225])
    weight, bias = twin_weights(seed)
    logits = (small.astype(np.float32) * weight[0, :, 0, 0]).sum(-1) + bias[0]
    saliency = 1 / (1 + np.exp(-logits))
    saliency = (saliency - saliency.min()) / (saliency.max() - saliency.min())
    mask = Image.fromarray((saliency * 255).astype(np.uint8))
    return np.asarray(mask.resize(image.size, Image.Resampling.LANCZOS))


def test_rembg_u2net_from_the_models_folder_matches_rembgs_processing(pack_dirs):
    assert u2net_path() is None
    views = torch.rand(2, 48, 40, 3, generator=torch.Generator().manual_seed(6))
    views[:, 10:30, 10:30, 0] = 1.0  # something salient for the twin's red-leaning filter
    views = (views * 255).round() / 255  # 8-bit views, as the release's PNGs
    with pytest.raises(GeoDreamError, match="u2net.onnx in models/rembg/"):
        matting.matte_views(views, "rembg", u2net_path())
    write_u2net(pack_dirs["models"] / "rembg" / "u2net.onnx")
    path = u2net_path()
    assert path == pack_dirs["models"] / "rembg" / "u2net.onnx"
    on_white, masks, used = matting.matte_views(views, "auto", path)
    assert used == "rembg"
    for view, mask, result in zip(views, masks, on_white):
        alpha8 = _rembg_alpha_by_hand(view)
        assert np.abs(alpha8.astype(int) - np.round((1 - mask.numpy()) * 255).astype(int)).max() <= 1
        background = torch.from_numpy(alpha8 <= 128)
        assert 0 < int(background.sum()) < background.numel()
        # rembg's naive_cutout: Image.composite onto transparent black, then alpha <= 128 -> 255
        rgb8 = Image.fromarray((view.numpy() * 255).round().astype(np.uint8))
        cutout = np.asarray(Image.composite(rgb8, Image.new("RGBA", rgb8.size, 0), Image.fromarray(alpha8)))[..., :3]
        expected = torch.from_numpy(cutout / 255.0).float()
        assert (result[background] == 1).all()
        torch.testing.assert_close(result[~background], expected[~background], atol=0.6 / 255, rtol=0)
        soft = torch.from_numpy((alpha8 > 128) & (alpha8 < 250))
        assert soft.any() and (result[soft] < view[soft] - 0.5 / 255).any()  # edges darkened, as the release's


def test_a_broken_u2net_file_is_a_clear_error(pack_dirs):
    broken = pack_dirs["models"] / "rembg" / "u2net.onnx"
    broken.parent.mkdir(parents=True)
    broken.write_bytes(b"not a model")
    with pytest.raises(GeoDreamError, match="could not read .*u2net.onnx as rembg's"):
        matting.matte_views(torch.rand(1, 8, 8, 3), "rembg", broken)


def _u2net_alpha_by_hand(array8, seed=0):
    """rembg's U2netSession.predict on an 8-bit array handed over as RGB, the twin's network written out."""
    image = Image.fromarray(array8)
    small = np.asarray(image.resize((320, 320), Image.Resampling.LANCZOS), dtype=np.float64)
    small = (small / small.max() - np.array([0.485, 0.456, 0.406])) / np.array([0.229, 0.224, 0.225])
    weight, bias = twin_weights(seed)
    saliency = 1 / (1 + np.exp(-((small.astype(np.float32) * weight[0, :, 0, 0]).sum(-1) + bias[0])))
    saliency = (saliency - saliency.min()) / (saliency.max() - saliency.min())
    return np.asarray(Image.fromarray((saliency * 255).astype(np.uint8)).resize(image.size, Image.Resampling.LANCZOS))


def _div255(v):
    """PIL's rounded division by 255 in its blends (ImagingPaste / Image.composite)."""
    v = v + 128
    return (v + (v >> 8)) >> 8


def _soft_edged_grid(tile=40):
    """Six tiles of a magenta disc (salient to the twin in either channel order) with a soft (anti-aliased, 6 px)
    rim on Zero123++'s grey."""
    yy, xx = np.meshgrid(np.arange(tile), np.arange(tile), indexing="ij")
    tiles = []
    for k in range(6):
        r = np.hypot(yy - 20 + k, xx - 19 - k % 2)
        cover = np.clip((14 - r) / 6, 0, 1)[..., None]
        colour = np.array([0.9, 0.2 + 0.02 * k, 0.85])
        tiles.append(cover * colour + (1 - cover) * GREY)
    return torch.from_numpy(np.stack(tiles)).float()


def test_zero123plus_tiles_get_the_releases_two_passes(pack_dirs):
    """img_to_6mv.py then rank_and_resize.py, written out: rembg on the whole grid (PIL, RGB), cut-out by PIL's
    composite onto transparent black, tiles cropped, resized as RGBA (premultiplied, PIL bilinear), alpha dropped by
    cv2.imread (object on black), then rembg on the BGR array, its cut-out, alpha <= 128 -> white."""
    path = write_u2net(pack_dirs["models"] / "rembg" / "u2net.onnx")
    tiles = _soft_edged_grid()
    size = 32
    grid8 = (merge_grid(tiles).numpy() * 255).round().astype(np.uint8)
    a1 = _u2net_alpha_by_hand(grid8).astype(np.int64)
    cut = np.concatenate([_div255(grid8.astype(np.int64) * a1[..., None]), a1[..., None]], -1).astype(np.uint8)
    expected = []
    for tile in split_grid(torch.from_numpy(cut)).numpy():
        resized = Image.fromarray(tile, "RGBA").convert("RGBa").resize((size, size), Image.Resampling.BILINEAR)
        on_black = np.asarray(resized.convert("RGBA"))[..., :3]  # cv2.imread drops alpha (BGR order, same values)
        a2 = _u2net_alpha_by_hand(np.ascontiguousarray(on_black[..., ::-1])).astype(np.int64)
        out = _div255(on_black.astype(np.int64) * a2[..., None])
        out[a2 <= 128] = 255
        expected.append(out / 255.0)
    expected = torch.from_numpy(np.stack(expected)).float()
    first = matting.zero123plus_first_pass(tiles, path, size)
    assert first.shape == (6, size, size, 3) and float(first[:, 0, 0].max()) < 0.05  # the backdrop comes back black
    ours, masks, used = matting.matte_views(first, "rembg", path)
    assert used == "rembg"
    torch.testing.assert_close(ours, expected, atol=1.01 / 255, rtol=0)
    # one pass on the grey tile (before) differs at the rim
    one_pass = matting.matte_views(torch.from_numpy(np.stack([np.asarray(Image.fromarray(
        (t.numpy() * 255).round().astype(np.uint8)).resize((size, size), Image.Resampling.BILINEAR)) / 255.0
        for t in tiles])).float(), "rembg", path)[0]
    assert (one_pass - expected).abs().max() > 0.05
