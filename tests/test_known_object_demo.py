"""The known-object demo template (example_workflows/known_object_demo.json) runs headlessly with no model file at
all, and its GLB is the object: it passes the frame check and the F-score target of tests/test_known_shape.py.
Sizes are overridden for CI as tests/test_example_workflows.py does; the graph is the shipped one."""
from headless.pack import PACK_ROOT
from headless.run import run_workflow

from geodream_pack.geodream_ops import known_shape
from geodream_pack.geodream_ops.known_objects import make_object
from tests.test_known_shape import THRESHOLDS

TINY = {
    "GeoDreamKnownObjectViews": {"size": 96, "mesh_resolution": 48},
    "GeoDreamStartVolume": {"resolution": 48},
    "GeoDreamVSDRefineNeuS": {"steps": 100, "resolution": 32, "preview_every": 30, "samples_per_ray": 64},
    "GeoDreamDMTetFineTune": {"tet_resolution": 32, "geometry_steps": 10, "texture_steps": 120, "render_size": 64,
                              "preview_every": 50, "texture_size": 128},
}


def test_the_demo_runs_without_downloads_and_recovers_the_block(pack_dirs):
    log = []
    written = run_workflow(PACK_ROOT / "example_workflows" / "known_object_demo.json", TINY, log=log.append)
    assert not any((pack_dirs["models"]).rglob("*"))  # nothing was needed, nothing fetched
    (glb,) = [p for p in written if p.endswith(".glb")]
    for stage in ("GeoDreamVSDRefineNeuS", "GeoDreamDMTetFineTune", "GeoDreamSaveMesh", "Preview3D"):
        assert any(f"{stage} done" in line for line in log), stage
    sizes = known_shape.Sizes()
    obj = make_object("block", TINY["GeoDreamKnownObjectViews"]["mesh_resolution"])
    metrics = known_shape.measure_glb(pack_dirs["output"] / glb if not glb.startswith("/") else glb, obj,
                                      known_shape.truth_samples(obj, sizes.eval_points), sizes)
    assert metrics["loaders_agree"] and metrics["frame_check"], known_shape.summary(metrics)
    assert metrics["fscore_2pct"] >= THRESHOLDS["fscore_2pct"], known_shape.summary(metrics)
