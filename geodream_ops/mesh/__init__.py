"""Stage 4, mesh fine-tuning: DMTet's tet grid (tet_grid), marching tetrahedra (marching_tets) and learnable
SDF + offsets (dmtet), rasterisation (rasterizer, mesh_render), the geometry and texture passes
(mesh_finetune), the UV bake (texture_bake), and the TexturedMesh record with its file I/O
(textured_mesh, mesh_export, mesh_import), cleaned before native code sees it (mesh_repair)."""
