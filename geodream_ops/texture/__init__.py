"""The colour field of stages 3 and 4: a multiresolution hash grid h_Omega (hash_grid) and the small MLP
f_t' on it, c(x) = f_t'(h_Omega(x)) (texture_field); each stage trains a fresh one, with a neural environment map
behind it (environment_map)."""
