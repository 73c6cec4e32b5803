"""Stage 1, multi-view prediction: a frozen multi-view diffusion model turns the user's condition c (an
image for Zero123++, a prompt for MVDream) into posed views I_p = {I_i} at its rig {(R_i, T_i)}.
Exports the Zero123++ and MVDream pipelines (zero123plus, mvdream_pipeline), MVDream's multi-view
UNet (mvdream_unet), the model-file readers (mv_files), object preprocessing (object_preprocess), the
release's 14-view recipe (view_recipe) and views on white as the prior expects them (matting)."""
