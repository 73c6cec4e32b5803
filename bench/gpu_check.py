"""Every stage of the pack at the release's sizes and settings on one GPU: seconds, peak GPU memory against the
24 GB goal, and the share of a refinement step spent rendering versus in the guidance (VAE + UNet calls + LoRA).

Models are built with random weights in their published layouts (speed and memory do not depend on the values):
SD 2.1-base and SD 2.1 (768, v) from the configs the pack ships (geodream_ops/guidance/configs), MVDream's multi-view UNet,
Zero123++'s UNet (SD 2's, with its reference attention), Zero123-XL's UNet (SD 1's with 8 input channels), the SparseNeuS prior at grid 96, the release's NeuS field
(16 x 150^3 volume, real f_g, hash grid 16 x 2 of 2^19 rows), Uni3D-g and the EVA02-E-14-plus text tower.
Each stage is timed over ``--steps`` calls after one warm-up; stage totals multiply by the release's step counts.

    python bench/gpu_check.py                 # on a CUDA GPU, fp16 frozen models as the nodes load them (< 8 min)
    python bench/gpu_check.py --write         # ... and replace bench/RESULTS.md's "## GPU check" section
    python bench/gpu_check.py --smoke         # the same code at tiny sizes on the CPU (CI: tests/test_gpu_check.py)
"""
from __future__ import annotations

import argparse
import gc
import os
import platform
import resource
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from headless.pack import load_pack  # noqa: E402
import bench_field  # noqa: E402  (bench/ is the script's folder)
from stage_timing import timed_guidance, write_section  # noqa: E402

SECTION = "## GPU check"
GOAL_GB = 24.0


@dataclass
class Sizes:
    """What each stage builds and runs; ``REAL`` is the release, ``SMOKE`` the same structure in miniature."""

    sd_base: dict | None  # UNet/VAE/text configs; None: configs/sd21-base as shipped
    sd_lora: dict | None  # the LoRA branch's UNet config; None: configs/sd21 (768, v-prediction)
    mvdream_unet: dict  # MultiViewUNet kwargs
    mvdream_latent: int
    mvdream_steps: int
    zero123_latent: tuple  # tile latent side, grid rows x cols
    zero123_steps: int
    zero123xl_unet: dict  # UNet2DConditionModel kwargs of Zero123-XL / Stable Zero123
    zero123xl_latent: int
    prior_views: int
    prior_image: int
    prior_grid: int
    volume_resolution: int
    mesh_resolution: int
    field_grid: dict  # HashGridConfig kwargs of the NeuS texture and the DMTet texture
    refine_sizes: tuple
    render: dict  # RenderSettings kwargs
    tet_resolution: int
    geometry_batch: int
    geometry_size: int
    texture_size: int
    uni3d: str | None  # uni3d.SIZES key; None: the twin config
    clip: str | None  # open_clip model; None: the twin text config
    uni3d_points: int
    field_points: int  # samples of one field step (bench_field.py)
    notes: dict = field(default_factory=dict)


# The release's settings: Zero123++ v1.1 at 75 steps (zero123plus.RELEASE_STEPS), the prior from 14 views (view_recipe).
REAL = Sizes(sd_base=None, sd_lora=None, mvdream_unet={}, mvdream_latent=32, mvdream_steps=50,
             zero123_latent=(40, 3, 2), zero123_steps=75, zero123xl_latent=32,
             zero123xl_unet=dict(in_channels=8, cross_attention_dim=768, attention_head_dim=8), prior_views=14, prior_image=256, prior_grid=96,
             volume_resolution=150, mesh_resolution=128, field_grid={}, refine_sizes=(256, 512), render={},
             tet_resolution=256, geometry_batch=8, geometry_size=512, texture_size=1024, uni3d="giant",
             clip="EVA02-E-14-plus", uni3d_points=10000, field_points=131072)
SMOKE = Sizes(sd_base={}, sd_lora={}, mvdream_unet=dict(model_channels=64, channel_mult=(1, 2), num_res_blocks=1,
                                                          attention_resolutions=(1,), context_dim=64),
              mvdream_latent=4, mvdream_steps=2, zero123_latent=(4, 3, 2), zero123_steps=2, zero123xl_latent=4,
              zero123xl_unet=dict(in_channels=8, cross_attention_dim=32, attention_head_dim=8, block_out_channels=(32, 64),
                                  layers_per_block=1, down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
                                  up_block_types=("UpBlock2D", "CrossAttnUpBlock2D")), prior_views=2,
              prior_image=32, prior_grid=16, volume_resolution=24, mesh_resolution=16,
              field_grid=dict(n_levels=4, log2_hashmap_size=10, base_resolution=4, max_resolution=32),
              refine_sizes=(8, 16), render=dict(n_coarse=8, n_importance=8, chunk_rays=128), tet_resolution=16,
              geometry_batch=2, geometry_size=16, texture_size=16, uni3d=None, clip=None, uni3d_points=256,
              field_points=4096)


class Meter:
    """Times calls (synchronised on CUDA) and reads peak memory: the allocator's on CUDA, the process RSS on CPU."""

    def __init__(self, device: torch.device):
        self.device = device

    def sync(self):
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def reset(self):
        if self.device.type == "cuda":  # the last stage's models go before the next is measured
            gc.collect()
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats(self.device)

    def peak_gb(self) -> float:
        if self.device.type == "cuda":
            return torch.cuda.max_memory_allocated(self.device) / 2 ** 30
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2 ** 20

    def time(self, fn, steps: int) -> float:
        """Seconds per call: one warm-up, then the mean of ``steps`` calls."""
        fn()
        self.sync()
        start = time.perf_counter()
        for _ in range(steps):
            fn()
        self.sync()
        return (time.perf_counter() - start) / steps


# --- model builders ------------------------------------------------------------------------------------------------
def build_sd(sizes: Sizes, device, dtype, ops, lora: bool = False):
    """A DiffusionModel: SD 2.1-base (UNet, VAE, text encoder) or, with ``lora``, SD 2.1 768's UNet alone."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    sd = ops.guidance.sd_guidance
    if (sizes.sd_lora if lora else sizes.sd_base) is not None:  # smoke: the tests' twins
        from tests import twins_sd

        unet, vae, text, scheduler = twins_sd.build(1 if lora else 0, "v_prediction" if lora else "epsilon")
        vocab = text.config.vocab_size
    else:
        folder = sd.CONFIGS / ("sd21" if lora else "sd21-base")
        with torch.device(device):
            unet = UNet2DConditionModel.from_config(UNet2DConditionModel.load_config(folder / "unet"))
            vae = None if lora else AutoencoderKL.from_config(AutoencoderKL.load_config(folder / "vae"))
            text = None if lora else CLIPTextModel(CLIPTextConfig.from_pretrained(folder / "text_encoder"))
        scheduler = sd._scheduler(folder / "scheduler" / "scheduler_config.json")
        vocab = 49408
    model = sd.DiffusionModel(unet, scheduler, None if lora else vae, None if lora else text,
                              lambda prompts: torch.randint(0, vocab, (len(prompts), 77)))
    for module in (model.unet, model.vae, model.text_encoder):
        if module is not None:
            module.to(device=device, dtype=dtype).requires_grad_(False)
    return model


def build_guidance(sizes: Sizes, device, dtype, ops):
    """VSD's two branches as the release runs them: frozen SD 2.1-base, and SD 2.1 768 for the LoRA."""
    return ops.guidance.sd_guidance.Guidance(build_sd(sizes, device, dtype, ops), build_sd(sizes, device, dtype, ops, True),
                                    device, dtype, "random weights")


def release_cost_volume(sizes: Sizes, device, ops):
    """The release's refinement start: 16 x 150^3 volume and the real f_g (random values)."""
    torch.manual_seed(0)
    r = sizes.volume_resolution
    volume = 0.1 * torch.randn(1, 16, r, r, r, device=device)
    decoder = ops.prior.geometry_decoder.GeometryDecoder().to(device).requires_grad_(False)
    return ops.prior.cost_volume.CostVolume(volume, decoder, ops.prior.release_frame.BBOX.to(device))


# --- stages --------------------------------------------------------------------------------------------------------
def stage_mvdream(sizes, meter, device, dtype, ops, steps):
    unet = ops.multiview.mvdream_unet.MultiViewUNet(**sizes.mvdream_unet).to(device=device, dtype=dtype).requires_grad_(False)
    views, side = 4, sizes.mvdream_latent
    x = torch.randn(2 * views, 4, side, side, device=device, dtype=dtype)  # CFG: [uncond, cond] x 4 views
    context = torch.randn(2 * views, 77, unet.config["context_dim"], device=device, dtype=dtype)
    camera = ops.cameras.mvdream_camera_embedding(ops.cameras.mvdream_rig()).to(device, dtype).repeat(2, 1)
    with torch.no_grad():
        per_step = meter.time(lambda: unet(x, 500, context, camera, num_views=views), steps)
    return {"stage": "MultiViewGenerate, MVDream (4 views, CFG)", "unit": "UNet step", "seconds": per_step,
            "total": per_step * sizes.mvdream_steps, "total_of": f"{sizes.mvdream_steps} steps (VAE decode excluded)"}


def stage_zero123plus(sizes, meter, device, dtype, ops, steps):
    base = build_sd(sizes, device, dtype, ops, lora=True)  # Zero123++ v1.2's UNet is SD 2's (v-prediction)
    unet = base.unet
    bank = ops.multiview.zero123plus.install_reference_attention(unet)
    tile, rows, cols = sizes.zero123_latent
    latents = torch.randn(2, 4, rows * tile, cols * tile, device=device, dtype=dtype)  # CFG
    reference = torch.randn(2, 4, tile, tile, device=device, dtype=dtype)
    context = torch.randn(2, 77, unet.config.cross_attention_dim, device=device, dtype=dtype)

    def step():
        bank.mode = "write"
        unet(reference, 500, context)
        bank.mode = "read"
        unet(latents, 500, context)
        bank.mode = None
        bank.states.clear()

    with torch.no_grad():
        per_step = meter.time(step, steps)
    return {"stage": "MultiViewGenerate, Zero123++ (6 tiles, CFG 4)", "unit": "step (reference + denoise)",
            "seconds": per_step, "total": per_step * sizes.zero123_steps,
            "total_of": f"{sizes.zero123_steps} steps (VAE decode excluded)"}


def stage_zero123xl(sizes, meter, device, dtype, ops, steps):
    """One-2-3-45's 40 views as the release runs them: one first-stage batch of 8 views over 77 DDIM timesteps
    ("75 steps"), then 8 batches of 4 neighbours over 50; CFG doubles every batch. The other kwargs of the UNet are
    diffusers' defaults, which are SD 1's (320 wide, levels 1/2/4/4, two blocks per level)."""
    from diffusers import UNet2DConditionModel

    zero123 = ops.multiview.zero123
    unet = UNet2DConditionModel(out_channels=4, **sizes.zero123xl_unet).to(device=device, dtype=dtype).requires_grad_(False)
    side, width = sizes.zero123xl_latent, unet.config.cross_attention_dim
    rows = []
    with torch.no_grad():
        for views, run_steps, runs in ((8, zero123.RELEASE_STEPS, 1), (4, zero123.RELEASE_NEIGHBOUR_STEPS, 8)):
            x = torch.randn(2 * views, 8, side, side, device=device, dtype=dtype)
            context = torch.randn(2 * views, 1, width, device=device, dtype=dtype)
            per_step = meter.time(lambda: unet(x, 500, context), steps)
            timesteps = len(ops.multiview.ldm_schedule.ddim_timesteps(run_steps))
            rows.append({"stage": f"MultiViewGenerate, Zero123-XL ({views} views, CFG 3)", "unit": "UNet step",
                         "seconds": per_step, "total": per_step * timesteps * runs,
                         "total_of": f"{runs} x {timesteps} DDIM steps (VAE and CLIP excluded)"})
    return rows


def stage_prior(sizes, meter, device, dtype, ops, steps):
    from tests.twins_prior import random_prior

    model = random_prior(0).to(device)
    rig = ops.cameras.mvdream_rig()
    if sizes.prior_views > 4:  # the release's 14: 4 MVDream views and the Zero123++ v1.1 tiles it keeps around them
        selection = ops.multiview.view_recipe.tile_selection(ops.multiview.view_recipe.RECIPES[0], len(rig))
        rig = ops.multiview.view_recipe.expanded_cameras(ops.multiview.view_recipe.release_source_cameras(rig), selection)
    rig = rig[:sizes.prior_views]
    images = torch.rand(len(rig), sizes.prior_image, sizes.prior_image, 3, device=device)
    built = {}

    def build():
        built["volume"] = ops.prior.model.build_cost_volume(model, images, rig, sizes.volume_resolution, sizes.prior_grid,
                                                      sizes.prior_image)

    with torch.no_grad():
        seconds = meter.time(build, max(1, steps // 2))
        peak = meter.peak_gb()
        meter.reset()
        # Prior To Mesh on an object-like prior (bench_field.py --mesh), against marching cubes alone and f_g alone
        # at the fewest points that give its mesh: whether the node is within 2x of marching cubes here.
        cases = bench_field.measure_mesh(ops, None, sizes.mesh_resolution, steps, [torch.get_num_threads()], device,
                                         meter.sync, sizes.volume_resolution)["cases"]
    alone, threads = cases["marching cubes alone"].seconds, torch.get_num_threads()
    mesh, floor = cases[f"Prior To Mesh, {threads}"].seconds, cases[f"floor, {threads}"].seconds
    return [{"stage": f"BuildCostVolume ({sizes.prior_views} views, grid {sizes.prior_grid}, "
                      f"{sizes.volume_resolution}^3)", "unit": "build", "seconds": seconds, "peak_gb": peak},
            {"stage": f"PriorToMesh ({sizes.mesh_resolution}^3, object-like: {mesh / alone:.1f}x marching cubes "
                      f"alone, f_g at the fewest points {floor / alone:.1f}x)", "unit": "mesh", "seconds": mesh}]


def stage_field(sizes, meter, device, dtype, ops, steps):
    """One field step (s, ds/dx with the graph, c; backward into V and the hash grid) against its op floor
    (bench_field.py): samples/s and field/floor, with the hash grid in pure PyTorch and, where it is installed,
    tiny-cuda-nn -- which of the two the CUDA default should be."""
    try:
        import tinycudann  # noqa: F401
        tcnn = device.type == "cuda"
    except ImportError:
        tcnn = False
    cases = bench_field.measure(ops, device, sizes.field_points, steps, sync=meter.sync, grid=sizes.field_grid,
                                resolution=sizes.volume_resolution, tcnn=tcnn)
    floor = bench_field.floor_of(cases)
    rows = []
    for name, label in (("field", "pure-PyTorch hash grid"), ("field (tiny-cuda-nn)", "tiny-cuda-nn hash grid")):
        if name in cases:
            seconds = cases[name].seconds
            rows.append({"stage": f"Field step, {label} ({sizes.field_points:,} samples: "
                                  f"{sizes.field_points / seconds:,.0f} samples/s, field/floor {seconds / floor:.2f})",
                         "unit": "step", "seconds": seconds})
    return rows


def stage_refine(sizes, meter, device, dtype, ops, steps, resolution, guidance, label=""):
    timed_fn, spent = timed_guidance(
        ops.guidance.score_distillation.make_guidance_fn(guidance, "a ceramic owl"), meter.sync)
    settings = ops.refine.refine_neus.RefineSettings(
        steps=steps + 2, resolution=resolution, half_resolution_until=0.0,
        field=ops.refine.neus_field.FieldSettings(hash_grid=ops.texture.hash_grid.HashGridConfig(**sizes.field_grid).to_dict()),
        render=ops.refine.neus_renderer.RenderSettings(**sizes.render))
    run = ops.refine.refine_neus.Refinement(release_cost_volume(sizes, device, ops), timed_fn, settings, device)
    run.train_step()  # warm-up
    spent["guidance"] = 0.0
    meter.sync()
    start = time.perf_counter()
    for _ in range(steps):
        run.train_step()
    meter.sync()
    seconds = (time.perf_counter() - start) / steps
    share = spent["guidance"] / steps / seconds
    total = seconds * ops.refine.refine_neus.RefineSettings().steps
    return {"stage": f"VSDRefineNeuS at {resolution} px (VSD: base CFG + LoRA branch + LoRA step){label}",
            "unit": "iteration", "seconds": seconds, "render_share": 1 - share, "total": total,
            "total_of": f"{ops.refine.refine_neus.RefineSettings().steps} iterations if all at this size"}


def stage_dmtet(sizes, meter, device, dtype, ops, steps, guidance):
    """The geometry pass (SDS on normal maps, batch 8 at 512 px) and the texture pass (VSD at 1024 px) on the mesh
    of a sphere-like field (the stage reads only the field's SDF once, to extract its start mesh)."""
    from tests.neus_doubles import sphere_cost_volume

    finetune = ops.mesh.mesh_finetune
    config = finetune.FineTuneConfig(tet_resolution=sizes.tet_resolution, geometry_steps=steps + 1,
                                     texture_steps=steps + 1, render_size=sizes.texture_size,
                                     geometry_batch=sizes.geometry_batch,
                                     texture_grid=ops.texture.hash_grid.HashGridConfig(**sizes.field_grid))
    field = ops.refine.neus_field.NeuSField(sphere_cost_volume(4, 8)).to(device)
    geometry_fn = ops.guidance.score_distillation.make_guidance_fn(guidance, "a ceramic owl", **finetune.GEOMETRY_GUIDANCE)
    texture_fn = ops.guidance.score_distillation.make_guidance_fn(guidance, "a ceramic owl", **finetune.TEXTURE_GUIDANCE)
    tuner = finetune.MeshFineTuner(field, geometry_fn, texture_fn, config, 0, device)
    rows = []
    meter.reset()
    geometry = meter.time(lambda: (tuner.geometry_step(), setattr(tuner, "step", tuner.step + 1)), steps)
    rows.append({"stage": f"DMTetFineTune geometry (SDS, batch {sizes.geometry_batch} at {config.geometry_size} px, "
                          f"tet grid {sizes.tet_resolution})", "unit": "step", "seconds": geometry,
                 "peak_gb": meter.peak_gb(), "total": geometry * finetune.FineTuneConfig().geometry_steps,
                 "total_of": f"{finetune.FineTuneConfig().geometry_steps} steps"})
    tuner.step = config.geometry_steps
    meter.reset()
    texture = meter.time(lambda: (tuner.texture_step(), setattr(tuner, "step", tuner.step + 1)), steps)
    rows.append({"stage": f"DMTetFineTune texture (VSD, {sizes.texture_size} px)", "unit": "step", "seconds": texture,
                 "peak_gb": meter.peak_gb(), "total": texture * finetune.FineTuneConfig().texture_steps,
                 "total_of": f"{finetune.FineTuneConfig().texture_steps} steps"})
    return rows


def stage_uni3d(sizes, meter, device, dtype, ops, steps):
    """One score: the point cloud through Uni3D's point encoder and the prompt through the text tower."""
    import open_clip
    from open_clip.model import _build_text_tower, convert_weights_to_lp

    from tests import twins_uni3d

    config = ops.uni3d.encoder.SIZES[sizes.uni3d] if sizes.uni3d else twins_uni3d.TWIN_CONFIG
    clip = open_clip.get_model_config(sizes.clip) if sizes.clip else twins_uni3d.TWIN_CLIP_CONFIG
    with torch.device(device):
        model = ops.uni3d.encoder.Uni3D(config)
        tower = _build_text_tower(clip["embed_dim"], clip["text_cfg"], quick_gelu=clip.get("quick_gelu", False),
                                  cast_dtype=dtype if dtype != torch.float32 else None)
    model = model.to(dtype=dtype).eval().requires_grad_(False)
    tower = tower.eval().requires_grad_(False)
    if dtype != torch.float32:
        convert_weights_to_lp(tower, dtype)
    xyz = ops.uni3d.point_sampling.normalize_unit_sphere(torch.randn(sizes.uni3d_points, 3))
    points = torch.cat([xyz, torch.rand_like(xyz)], -1)[None].to(device)
    tokens = torch.randint(0, clip["text_cfg"].get("vocab_size", 49408), (1, 77), device=device)
    with torch.no_grad():
        seconds = meter.time(lambda: (model.encode(points.to(dtype)), tower(tokens)), steps)
    return {"stage": f"Uni3DScore ({sizes.uni3d or 'twin'} + {sizes.clip or 'twin text'}, "
                     f"{sizes.uni3d_points} points)", "unit": "score", "seconds": seconds}


# --- the run -------------------------------------------------------------------------------------------------------
def run_all(sizes: Sizes, device: torch.device, dtype: torch.dtype, steps: int) -> list[dict]:
    ops = load_pack().geodream_ops
    meter = Meter(device)
    rows = []

    def measure(fn, *args):
        meter.reset()
        start = time.perf_counter()
        out = fn(sizes, meter, device, dtype, ops, steps, *args)
        for row in out if isinstance(out, list) else [out]:
            row.setdefault("peak_gb", meter.peak_gb())
            row["wall"] = time.perf_counter() - start
            rows.append(row)
            print(format_row(row), flush=True)

    measure(stage_mvdream)
    measure(stage_zero123plus)
    measure(stage_zero123xl)
    measure(stage_prior)
    measure(stage_field)
    guidance = build_guidance(sizes, device, dtype, ops)
    for resolution in sizes.refine_sizes:
        measure(stage_refine, resolution, guidance)
    if device.type == "cuda":  # the SDF's graph through torch.compile (off by default until measured here)
        os.environ["GEODREAM_COMPILE"] = "1"
        measure(stage_refine, sizes.refine_sizes[0], guidance, ", SDF through torch.compile (compiled in the warm-up)")
        del os.environ["GEODREAM_COMPILE"]
    measure(stage_dmtet, guidance)
    del guidance
    measure(stage_uni3d)
    return rows


def format_row(row: dict) -> str:
    share = f"{row['render_share']:.0%}" if "render_share" in row else "-"
    total = f"{row['total'] / 60:.1f} min ({row['total_of']})" if "total" in row else "-"
    fits = "yes" if row["peak_gb"] <= GOAL_GB else "**no**"
    return (f"| {row['stage']} | {row['seconds']:.3f} s / {row['unit']} | {total} | {row['peak_gb']:.2f} | {fits} | "
            f"{share} |")


def report(rows: list[dict], device: torch.device, dtype: torch.dtype, steps: int, smoke: bool) -> str:
    where = (torch.cuda.get_device_name(device) if device.type == "cuda"
             else f"CPU {platform.machine()}, {torch.get_num_threads()} threads")
    memory = "peak allocated by torch" if device.type == "cuda" else "process peak RSS so far (monotone)"
    lines = [SECTION, "",
             f"`python bench/gpu_check.py{' --smoke' if smoke else ''}`: {where}, {str(dtype).split('.')[-1]} frozen "
             f"models, torch {torch.__version__}; random weights in the published layouts; mean of {steps} calls "
             f"after a warm-up. Memory: {memory}, against the {GOAL_GB:.0f} GB goal."
             + (" Smoke run: tiny sizes, the figures say nothing about the release." if smoke else ""), "",
             "| stage | time | whole stage at release settings | peak GB | fits 24 GB | rendering share |",
             "|---|---|---|---:|---|---:|"]
    lines += [format_row(r) for r in rows]
    return "\n".join(lines) + "\n"


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--smoke", action="store_true", help="tiny sizes on the CPU (what CI runs)")
    parser.add_argument("--device", default=None, help="default: cuda, or cpu with --smoke")
    parser.add_argument("--steps", type=int, default=None, help="timed calls per stage (default 3, smoke 1)")
    parser.add_argument("--write", nargs="?", const=str(ROOT / "bench" / "RESULTS.md"), default=None,
                        help="replace the section in this file (default bench/RESULTS.md)")
    args = parser.parse_args(argv)
    device = torch.device(args.device or ("cpu" if args.smoke else "cuda"))
    if device.type == "cuda" and not torch.cuda.is_available():
        sys.exit("gpu_check: no CUDA device here; run it on a GPU machine, or use --smoke for the CPU check.")
    dtype = torch.float16 if device.type == "cuda" else torch.float32
    if args.smoke:
        torch.set_num_threads(1)  # tiny models: thread start-up costs more than it saves (as in the tests)
    steps = args.steps or (1 if args.smoke else 3)
    rows = run_all(SMOKE if args.smoke else REAL, device, dtype, steps)
    text = report(rows, device, dtype, steps, args.smoke)
    print(text)
    if args.write:
        write_section(text, Path(args.write), SECTION)


if __name__ == "__main__":
    main()
