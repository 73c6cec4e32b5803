"""NeuS volume rendering of a field (anything with ``sdf``, ``sdf_and_gradient``, ``color``, ``background``,
``inv_s`` and ``bbox``, e.g. neus_field.NeuSField).

Along a ray, between consecutive samples, NeuS's opacity of a section with signed distances s_prev > s_next is
    alpha = (Phi(s_prev) - Phi(s_next)) / Phi(s_prev),   Phi(s) = sigmoid(inv_s * s),
with s_prev/next estimated from the SDF at the section's midpoint and its slope along the ray. Samples: uniform
(stratified while training) inside the field's box -- by default 512 per ray, so the step is at most the release's
1.732 * 2 / 512 of its unit box -- optionally followed by importance samples drawn from the coarse weights
(``n_importance``; measured in bench/RESULTS.md: 64 + 64 misses the release's opacities by up to 0.2 at rims). Free space
is skipped as the release skips it (occupancy_grid.py): sections of step opacity under min(0.01, the grid's mean
occupancy), or behind a transmittance of 1e-4, are never evaluated and contribute nothing
(``RenderSettings.skip_free_space``).
Outputs: colour over the background, opacity, expected depth (distance along the unit ray), normals (the
normalised SDF gradient, composited) -- each [N, H, W, C].

Memory stays bounded at any resolution: rays go through in chunks, and ``render_with_loss`` backpropagates a loss
on the whole image chunk by chunk. A chunk whose graph fits the memory budget keeps it (one pass); the others are
rendered without a graph and re-rendered with one when the image gradient is known (two passes; the samples are
fixed beforehand, so both passes see the same rays). Either way the numbers are the same. Renders without a graph
(previews, turntables) take chunks that fit a share of the device's free memory and a bounded number of samples,
checking for a Cancel between them (cancel.py); chunking never changes the numbers."""
from __future__ import annotations

import time
from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F

from .. import cancel
from ..cameras import Cameras
from ..device_memory import GraphBytes, free_bytes
from .occupancy_grid import contributing, maybe_occupied


@dataclass
class RenderSettings:
    n_coarse: int = 512  # uniform samples over the ray's segment in the box (the release: 512 steps per diagonal)
    n_importance: int = 0
    chunk_rays: int = 8192
    # NeuS's slope estimate: 0.0 is the release's -(1 - cos)/2 (geodream_geometry_volume.py get_alpha,
    # alpha_inter_ratio 0); 1.0 is min(cos, 0), NeuS's annealed end, which does not overstate the slope of oblique
    # rays on long sections (an option: docs/FIDELITY.md).
    cos_anneal_ratio: float = 0.0
    # The release's free-space skipping (occupancy grid + step opacity >= min(0.01, mean occupancy) + transmittance
    # stop); off renders every section.
    skip_free_space: bool = True
    # render_with_loss keeps chunk graphs (one pass instead of two) while they fit in this share of the memory free
    # when it starts; the guidance's UNet calls run while they are held, hence not all of it. 0: always two passes.
    keep_graph_fraction: float = 0.5


# A render without a graph holds about this many bytes per sample of a chunk at its peak (positions, SDF and gradient,
# hash-grid features, colour and the compositing buffers, float32): 3,801 measured with the release's f_g and hash
# grid on the CPU (bench/bench_preview.py). A chunk takes at most NO_GRAPH_MEMORY_SHARE of the device's free memory.
BYTES_PER_SAMPLE = 4096
NO_GRAPH_MEMORY_SHARE = 0.25
# Chunks are sized to take about CHUNK_SECONDS each (the first one, FIRST_CHUNK_SAMPLES, measures the rate), so a
# Cancel is answered within about that long whatever the device's speed (cancel.py).
CHUNK_SECONDS = 0.5
FIRST_CHUNK_SAMPLES = 2 ** 14
# A live preview renders with this fraction of the run's samples per ray, enough to see the shape.
PREVIEW_SAMPLE_FRACTION = 0.25


def preview_settings(settings: RenderSettings) -> RenderSettings:
    """The run's render settings with a quarter of its samples per ray (at least 32 coarse ones), for previews."""
    return replace(settings, n_coarse=max(32, int(settings.n_coarse * PREVIEW_SAMPLE_FRACTION)),
                   n_importance=int(settings.n_importance * PREVIEW_SAMPLE_FRACTION))


def no_graph_chunk_rays(settings: RenderSettings, device) -> int:
    """The most rays a chunk of a render without a graph takes: ``settings.chunk_rays``, and within
    NO_GRAPH_MEMORY_SHARE of the free memory of ``device`` (where it is known)."""
    samples = settings.n_coarse + settings.n_importance
    free = free_bytes(torch.device(device))
    if free <= 0:
        return settings.chunk_rays
    return max(1, min(settings.chunk_rays, int(NO_GRAPH_MEMORY_SHARE * free) // (samples * BYTES_PER_SAMPLE)))


def timed_chunks(count: int, samples_per_ray: int, limit: int):
    """Slices covering ``count`` rays, each about CHUNK_SECONDS of work at the rate the previous ones ran (at most
    ``limit`` rays), with a Cancel check before each. The caller computes a chunk before asking for the next."""
    clock = time.perf_counter
    size, start = max(1, min(limit, FIRST_CHUNK_SAMPLES // samples_per_ray)), 0
    while start < count:
        cancel.check()
        began = clock()
        yield slice(start, min(start + size, count))
        done, start = min(size, count - start), start + size
        seconds_per_ray = (clock() - began) / done
        size = max(1, min(limit, int(CHUNK_SECONDS / max(seconds_per_ray, 1e-12))))


def ray_box(origins: torch.Tensor, dirs: torch.Tensor, bbox: torch.Tensor):
    """Entry and exit distances [R] of rays in an axis-aligned box; rays that miss get near == far."""
    safe = torch.where(dirs.abs() < 1e-9, torch.full_like(dirs, 1e-9), dirs)
    t0, t1 = (bbox[0] - origins) / safe, (bbox[1] - origins) / safe
    near = torch.minimum(t0, t1).amax(-1).clamp_min(0.0)
    far = torch.maximum(t0, t1).amin(-1)
    return near, torch.maximum(far, near)


def section_alpha(sdf_prev: torch.Tensor, sdf_next: torch.Tensor, inv_s: torch.Tensor) -> torch.Tensor:
    prev_cdf, next_cdf = torch.sigmoid(sdf_prev * inv_s), torch.sigmoid(sdf_next * inv_s)
    return ((prev_cdf - next_cdf + 1e-5) / (prev_cdf + 1e-5)).clamp(0.0, 1.0)


def neus_alpha(sdf, cos, dists, inv_s, cos_anneal_ratio: float = 0.0):
    """Opacity of sections from the midpoint SDF [R, S], the ray-gradient cosine and the section lengths."""
    slope = -(F.relu(-cos * 0.5 + 0.5) * (1.0 - cos_anneal_ratio) + F.relu(-cos) * cos_anneal_ratio)
    half = slope.clamp(-10.0, 10.0) * dists * 0.5
    return section_alpha(sdf - half, sdf + half, inv_s)


def transmittance_weights(alpha: torch.Tensor) -> torch.Tensor:
    survive = torch.cumprod(torch.cat([torch.ones_like(alpha[:, :1]), 1.0 - alpha + 1e-7], dim=-1), dim=-1)
    return alpha * survive[:, :-1]


def sample_pdf(edges: torch.Tensor, weights: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """Inverse-CDF samples [R, M] over bins with ``edges`` [R, K+1] and ``weights`` [R, K]; ``u`` [R, M] in [0, 1)."""
    pdf = (weights + 1e-5) / (weights + 1e-5).sum(-1, keepdim=True)
    cdf = torch.cat([torch.zeros_like(pdf[:, :1]), torch.cumsum(pdf, -1)], dim=-1)
    idx = torch.searchsorted(cdf, u.contiguous(), right=True)
    below, above = (idx - 1).clamp(0, cdf.shape[-1] - 1), idx.clamp(0, cdf.shape[-1] - 1)
    cdf_lo, cdf_hi = cdf.gather(-1, below), cdf.gather(-1, above)
    bin_lo, bin_hi = edges.gather(-1, below), edges.gather(-1, above)
    span = torch.where(cdf_hi - cdf_lo < 1e-5, torch.ones_like(cdf_hi), cdf_hi - cdf_lo)
    return bin_lo + (u - cdf_lo) / span * (bin_hi - bin_lo)


@torch.no_grad()
def sample_along_rays(field, origins, dirs, settings: RenderSettings, u_coarse, u_fine) -> torch.Tensor:
    """Sample distances [R, n_coarse + n_importance], sorted: stratified coarse samples in the box, then importance
    samples from NeuS's coarse weights (slope from consecutive SDF values, as NeuS's up-sampling does). Where the
    field's occupancy grid bounds a coarse sample's step opacity under the threshold, its SDF is not evaluated:
    the grid's lower bound stands in for it."""
    near, far = ray_box(origins, dirs, field.bbox.to(origins))
    steps = (torch.arange(settings.n_coarse, device=origins.device) + u_coarse) / settings.n_coarse
    t = near[:, None] + (far - near)[:, None] * steps
    if settings.n_importance == 0:
        return t
    points = (origins[:, None] + dirs[:, None] * t[..., None]).reshape(-1, 3)
    grid = getattr(field, "occupancy", None)
    if settings.skip_free_space and grid is not None and grid.updated:
        sdf = grid.lower_bound(points)
        spacing = ((far - near) / settings.n_coarse)[:, None].expand_as(t).reshape(-1)
        evaluate = maybe_occupied(field, points, spacing)
        if evaluate.any():
            sdf[evaluate] = field.sdf(points[evaluate]).reshape(-1).to(sdf)
        sdf = sdf.clamp_max(1e3).reshape(t.shape)
    else:
        sdf = field.sdf(points).reshape(t.shape)
    dist = t[:, 1:] - t[:, :-1]
    cos = (sdf[:, 1:] - sdf[:, :-1]) / (dist + 1e-5)
    cos = torch.minimum(cos, torch.cat([torch.zeros_like(cos[:, :1]), cos[:, :-1]], dim=-1)).clamp(-1e3, 0.0)
    mid = 0.5 * (sdf[:, 1:] + sdf[:, :-1])
    alpha = section_alpha(mid - cos * dist * 0.5, mid + cos * dist * 0.5, field.inv_s)
    fine = sample_pdf(t, transmittance_weights(alpha), u_fine)
    return torch.sort(torch.cat([t, fine], dim=-1), dim=-1).values


def composite(field, origins, dirs, t, background: torch.Tensor, create_graph: bool, settings: RenderSettings):
    """Render rays [R, 3] at sample distances [R, S]; ``background`` [R, 3]. Sections lie between samples; only
    the contributing ones (occupancy_grid.contributing) are evaluated when skipping free space."""
    mids, dists = 0.5 * (t[:, 1:] + t[:, :-1]), t[:, 1:] - t[:, :-1]
    points = origins[:, None] + dirs[:, None] * mids[..., None]
    count = mids.numel()
    if settings.skip_free_space:
        index = contributing(field, points, dists).reshape(-1).nonzero().squeeze(1)
    else:
        index = torch.arange(count, device=t.device)
    empty = index.numel() == 0
    if empty:  # one sample of weight 0 keeps the outputs in the graph, so a backward through them still works
        index = torch.zeros(1, dtype=torch.long, device=t.device)
    kept = points.reshape(-1, 3)[index]
    sdf, gradient = field.sdf_and_gradient(kept, create_graph=create_graph)
    cos = (gradient * dirs[:, None].expand_as(points).reshape(-1, 3)[index]).sum(-1)
    alpha_kept = neus_alpha(sdf.reshape(-1), cos, dists.reshape(-1)[index], field.inv_s, settings.cos_anneal_ratio)
    if empty:
        alpha_kept = alpha_kept * 0.0
    alpha = torch.zeros(count, dtype=alpha_kept.dtype, device=t.device).index_put((index,), alpha_kept)
    colors = torch.zeros(count, 3, device=t.device).index_put((index,), field.color(kept).float())
    normals = torch.zeros(count, 3, device=t.device).index_put((index,), F.normalize(gradient, dim=-1).float())
    weights = transmittance_weights(alpha.reshape(mids.shape))
    opacity = weights.sum(-1, keepdim=True)
    return {
        "rgb": (weights[..., None] * colors.reshape(*mids.shape, 3)).sum(1) + (1.0 - opacity) * background,
        "opacity": opacity,
        "depth": (weights * mids).sum(-1, keepdim=True),
        "normal": (weights[..., None] * normals.reshape(*mids.shape, 3)).sum(1),
    }


@dataclass
class Rays:
    """Flattened rays of a camera batch with their sample jitter and (optional) fixed background colours."""

    origins: torch.Tensor  # [R, 3]
    dirs: torch.Tensor  # [R, 3]
    u_coarse: torch.Tensor  # [R, 1]
    u_fine: torch.Tensor  # [R, n_importance]
    background: torch.Tensor | None  # [R, 3], or None for the field's environment map
    chunks: list[slice]


def make_rays(field, cameras: Cameras, height: int, width: int, settings: RenderSettings, background=None,
              generator: torch.Generator | None = None) -> Rays:
    """Jitter is random with a ``generator`` (training) and fixed without one (evaluation)."""
    origins, dirs = cameras.to(field.bbox.device).rays(height, width)
    origins, dirs = origins.reshape(-1, 3), dirs.reshape(-1, 3)
    count = origins.shape[0]
    if generator is None:
        u_coarse = torch.full((count, 1), 0.5, device=origins.device)
        u_fine = torch.linspace(0.0, 1.0, settings.n_importance + 2, device=origins.device)[1:-1].expand(count, -1)
    else:
        u_coarse = torch.rand(count, 1, generator=generator).to(origins.device)
        u_fine = torch.rand(count, settings.n_importance, generator=generator).to(origins.device)
    if background is not None:
        background = torch.as_tensor(background, dtype=torch.float32, device=origins.device)
        background = background.reshape(-1, 1, 3).expand(len(cameras), height * width, 3).reshape(-1, 3)
    chunks = [slice(s, s + settings.chunk_rays) for s in range(0, count, settings.chunk_rays)]
    return Rays(origins, dirs, u_coarse, u_fine, background, chunks)


def _composite_chunk(field, rays: Rays, c: slice, t: torch.Tensor, create_graph: bool, settings: RenderSettings):
    background = field.background(rays.dirs[c]) if rays.background is None else rays.background[c]
    return composite(field, rays.origins[c], rays.dirs[c], t, background, create_graph, settings)


def _render_without_graph(field, rays: Rays, n: int, height: int, width: int, settings: RenderSettings):
    """Images [n, H, W, C] rendered chunk by chunk (timed_chunks within no_graph_chunk_rays), checking for a
    Cancel between chunks."""
    limit = no_graph_chunk_rays(settings, rays.origins.device)
    parts = []
    for c in timed_chunks(rays.origins.shape[0], settings.n_coarse + settings.n_importance, limit):
        t = sample_along_rays(field, rays.origins[c], rays.dirs[c], settings, rays.u_coarse[c], rays.u_fine[c])
        with torch.no_grad():
            parts.append(_composite_chunk(field, rays, c, t, False, settings))
    return {k: torch.cat([p[k] for p in parts]).reshape(n, height, width, -1) for k in parts[0]}


def render(field, cameras: Cameras, height: int, width: int, settings: RenderSettings = RenderSettings(),
           background=None, generator: torch.Generator | None = None) -> dict:
    """Render without gradients (previews, evaluation). ``background``: None for the field's own environment map,
    else one RGB colour (or one per camera)."""
    rays = make_rays(field, cameras, height, width, settings, background, generator)
    return _render_without_graph(field, rays, len(cameras), height, width, settings)


def render_with_loss(field, cameras: Cameras, height: int, width: int, loss_fn, settings: RenderSettings = RenderSettings(),
                     background=None, generator: torch.Generator | None = None):
    """Render, evaluate ``loss_fn(images) -> scalar`` on the full images, and backpropagate it into the field.

    Chunk by chunk, a chunk's graph is kept while the graphs kept so far fit ``keep_graph_fraction`` of the free
    memory (the bytes per ray are measured on the first chunk, rendered with its graph as a re-render would be, and
    dropped if over budget); the other chunks render without a graph. Then the loss's gradient on the images flows into the kept graphs (freeing them) and into
    re-renders of the other chunks with the same samples. Returns (loss, images)."""
    rays = make_rays(field, cameras, height, width, settings, background, generator)
    device = rays.origins.device
    budget = settings.keep_graph_fraction * free_bytes(device) if settings.keep_graph_fraction > 0 else 0.0
    kept, redo, parts, spent, per_ray = {}, {}, [], 0.0, None
    for i, c in enumerate(rays.chunks):
        t = sample_along_rays(field, rays.origins[c], rays.dirs[c], settings, rays.u_coarse[c], rays.u_fine[c])
        rays_here = min(c.stop, rays.origins.shape[0]) - c.start
        if per_ray is None:  # the first chunk measures what a graph holds (as large as a re-render's)
            with GraphBytes(device) as held:
                out = _composite_chunk(field, rays, c, t, True, settings)
            per_ray = held.bytes / rays_here
        elif spent + per_ray * rays_here <= budget:
            out = _composite_chunk(field, rays, c, t, True, settings)
        else:
            with torch.no_grad():
                out = _composite_chunk(field, rays, c, t, False, settings)
        if out["rgb"].requires_grad and spent + per_ray * rays_here <= budget:
            spent += per_ray * rays_here
            kept[i] = out
        else:
            redo[i] = t
        parts.append({k: v.detach() for k, v in out.items()})
    images = {k: torch.cat([p[k] for p in parts]).reshape(len(cameras), height, width, -1).requires_grad_(True)
              for k in parts[0]}
    loss = loss_fn(images)
    loss.backward()
    keys = [k for k, v in images.items() if v.grad is not None]
    grads = {k: images[k].grad.reshape(-1, images[k].shape[-1]) for k in keys}
    for i in list(kept):
        out = kept.pop(i)
        torch.autograd.backward([out[k] for k in keys], [grads[k][rays.chunks[i]] for k in keys])
    for i, t in redo.items():
        out = _composite_chunk(field, rays, rays.chunks[i], t, True, settings)
        torch.autograd.backward([out[k] for k in keys], [grads[k][rays.chunks[i]] for k in keys])
    return loss.detach(), {k: v.detach() for k, v in images.items()}
