"""Stage 3, prior refinement: NeuS rendering of s(x) = f_g(E(x), V(x)) with V learnable and f_g frozen
(neus_field, neus_renderer, with the SDF gradient written out in sdf_gradient and free space skipped by
occupancy_grid), optimised with VSD against SD and the LoRA eps_lora (refine_neus)."""
