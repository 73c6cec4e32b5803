"""Stage 2, the 3D prior (SparseNeuS lod0 of One-2-3-45): f_2D features of every view (feature_net), projected
into a voxel grid (voxel_projection), their variance and mean over the views (view_variance), the sparse
3D CNN f_3D (sparse_conv, sparse_unet) regressing the cost volume V (cost_volume), and the geometry
decoder s(x) = f_g(E(x), V(x)) (geometry_decoder). model builds V from views; prior_checkpoint reads the
released weights; release_frame converts the release's frame; marching_cubes shows the prior's shape."""
