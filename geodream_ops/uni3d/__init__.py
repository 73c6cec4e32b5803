"""Stage 5, the Uni3D score: coloured surface points of a mesh (point_sampling), FPS + kNN patches
(point_groups), the Uni3D point encoder (encoder), the EVA02-E-14-plus text tower (uni3d_text), and
cosine x100 with the R-precision-style ranking (uni3d_score)."""
