"""Stage 1, multi-view prediction: a frozen multi-view diffusion model turns the user's condition c (an
image for Zero123++ and Zero123, a prompt for MVDream) into posed views I_p = {I_i} at its rig {(R_i, T_i)}.
Exports the Zero123++, MVDream and Zero123-XL / Stable Zero123 pipelines (zero123plus, mvdream_pipeline,
zero123), MVDream's multi-view UNet (mvdream_unet), the model-file readers (mv_files, ldm_checkpoint), latent diffusion's schedule (ldm_schedule),
object preprocessing (object_preprocess), the release's 14-view recipe (view_recipe) and One-2-3-45's
40-view recipe (zero123_recipe), the cameras of core ComfyUI's 3D nodes (core_views) and views on white
as the prior expects them (matting)."""
