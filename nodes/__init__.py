"""ComfyUI nodes: thin adapters over geodream_ops. Each module declares its nodes in ``NODES`` (node id ->
(class, display name)); NODE_CLASS_MAPPINGS below lists them as a literal, so static readers (comfy-test lint, the
registry's scanners) see every node without importing the pack. tests/test_pack.py checks that the literal holds
exactly what the modules declare: a new node goes into its module's NODES and one line here."""
import importlib
import pkgutil

from . import cameras, dmtet, guidance, known_object, mesh_io, multiview, prior, refine, uni3d

NODE_CLASS_MAPPINGS = {
    "GeoDreamCameraRig": cameras.GeoDreamCameraRig,
    "GeoDreamCustomCameras": cameras.GeoDreamCustomCameras,
    "GeoDreamSaveCameras": cameras.GeoDreamSaveCameras,
    "GeoDreamCoreViewCameras": cameras.GeoDreamCoreViewCameras,
    "GeoDreamLoadZero123Plus": multiview.GeoDreamLoadZero123Plus,
    "GeoDreamLoadMVDream": multiview.GeoDreamLoadMVDream,
    "GeoDreamLoadZero123": multiview.GeoDreamLoadZero123,
    "GeoDreamMultiViewGenerate": multiview.GeoDreamMultiViewGenerate,
    "GeoDreamExpandViews": multiview.GeoDreamExpandViews,
    "GeoDreamLoadPrior": prior.GeoDreamLoadPrior,
    "GeoDreamBuildCostVolume": prior.GeoDreamBuildCostVolume,
    "GeoDreamPriorToMesh": prior.GeoDreamPriorToMesh,
    "GeoDreamSaveCostVolume": prior.GeoDreamSaveCostVolume,
    "GeoDreamLoadCostVolume": prior.GeoDreamLoadCostVolume,
    "GeoDreamLoadVSDGuidance": guidance.GeoDreamLoadVSDGuidance,
    "GeoDreamKnownObjectViews": known_object.GeoDreamKnownObjectViews,
    "GeoDreamStartVolume": known_object.GeoDreamStartVolume,
    "GeoDreamReconstructionGuidance": known_object.GeoDreamReconstructionGuidance,
    "GeoDreamVSDRefineNeuS": refine.GeoDreamVSDRefineNeuS,
    "GeoDreamSaveField": refine.GeoDreamSaveField,
    "GeoDreamLoadField": refine.GeoDreamLoadField,
    "GeoDreamDMTetFineTune": dmtet.GeoDreamDMTetFineTune,
    "GeoDreamSaveMesh": mesh_io.GeoDreamSaveMesh,
    "GeoDreamLoadMesh": mesh_io.GeoDreamLoadMesh,
    "GeoDreamMeshToCoreMesh": mesh_io.GeoDreamMeshToCoreMesh,
    "GeoDreamLoadUni3D": uni3d.GeoDreamLoadUni3D,
    "GeoDreamUni3DScore": uni3d.GeoDreamUni3DScore,
}


def declared_nodes() -> dict:
    """node id -> (class, display name), from every module here that defines ``NODES``."""
    declared = {}
    for module in pkgutil.iter_modules(__path__):
        declared.update(getattr(importlib.import_module(f".{module.name}", __name__), "NODES", {}))
    return declared


NODE_DISPLAY_NAME_MAPPINGS = {node_id: display for node_id, (_, display) in declared_nodes().items()
                              if node_id in NODE_CLASS_MAPPINGS}
