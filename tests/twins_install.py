"""The tiny twins of the pipeline's models under the file names the example workflows use, in a models folder: for
the example-workflow tests, and for a live ComfyUI (``python -m tests.twins_install /tmp/comfy/models``)."""
import sys
from pathlib import Path


def install_pipeline_twins(models: Path) -> None:
    """MVDream (single file), Zero123++ v1.1 and v1.2, Zero123-XL (published .ckpt layout), the prior (f_g a sphere, so every stage downstream has a
    surface to work on) and SD 2.1-base and SD 2.1 (v-prediction, for VSD's LoRA as the release puts it)."""
    from tests import twins_multiview, twins_prior, twins_sd  # after the pack is importable (headless.pack)

    models = Path(models)
    twins_multiview.write_mvdream_single_file(models / "checkpoints" / "sd-v2.1-base-4view.pt")
    twins_multiview.write_zero123plus(models / "diffusers" / "zero123plus-v1.2")
    twins_multiview.write_zero123plus(models / "diffusers" / "zero123plus-v1.1")
    twins_multiview.write_zero123_checkpoint(models / "checkpoints" / "zero123-xl.ckpt")
    twins_prior.write_prior_checkpoint(models / "geodream", sphere_radius=0.5)
    twins_sd.save_diffusers_folder(models / "diffusers" / "stable-diffusion-2-1-base")
    twins_sd.save_diffusers_folder(models / "diffusers" / "stable-diffusion-2-1", seed=1, prediction_type="v_prediction")


if __name__ == "__main__":
    from headless.pack import load_pack

    load_pack()
    install_pipeline_twins(Path(sys.argv[1]))
