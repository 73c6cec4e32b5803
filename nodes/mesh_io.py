"""Mesh nodes: save a GEODREAM_MESH as GLB / OBJ, hand it to ComfyUI's own 3D nodes as a core MESH, or load a mesh
file (e.g. to score it with Uni3D)."""
from ..geodream_ops.cameras import to_gltf_frame
from ..geodream_ops.mesh.mesh_export import FORMATS, mesh_files, safe_stem, suffixes
from ..geodream_ops.mesh.mesh_import import SUFFIXES, load_mesh
from ..geodream_ops.mesh.mesh_repair import check_vertices
from ..geodream_ops.tensor_checks import require_finite
from . import categories
from . import edge_types as T
from . import host


SAVED_SUFFIXES = (".glb", ".obj", ".mtl", ".png")


def _check_mesh(mesh):
    if not hasattr(mesh, "faces") or mesh.faces.shape[0] == 0:
        raise ValueError("GeoDream: the mesh is empty (no faces); check the DMTet node's field and settings.")
    check_vertices(mesh.vertices, "the mesh")
    for name in ("uvs", "texture", "vertex_colors"):
        if getattr(mesh, name, None) is not None:
            require_finite(getattr(mesh, name), f"the mesh's {name}")


class GeoDreamSaveMesh:
    DESCRIPTION = ("Writes the textured mesh into the output folder (GLB: one file; OBJ: .obj + .mtl + .png texture), "
                   "Y up as glTF and Blender expect. Returns the path relative to the output folder: wire it into "
                   "core Preview3D's model_file to look at the result.")
    CATEGORY = categories.MESH
    RETURN_TYPES = ("STRING",)
    RETURN_NAMES = ("model_file",)
    FUNCTION = "save"
    OUTPUT_NODE = True

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "mesh": (T.MESH, {"tooltip": "The textured mesh from DMTetFineTune."}),
            "format": (list(FORMATS), {"default": "glb", "tooltip": "glb: one self-contained file (viewers, "
                                       "game engines, Preview3D). obj: OBJ + MTL + PNG, for older tools."}),
            "filename_prefix": ("STRING", {"default": "GeoDream/mesh", "tooltip":
                                           "Path under the output folder; a counter is appended (mesh_00001_.glb). "
                                           "OBJ files cannot reference names with spaces or '#': those become '_'."}),
        }}

    @classmethod
    def VALIDATE_INPUTS(cls, filename_prefix=None):
        return host.check_prefix(filename_prefix, SAVED_SUFFIXES)

    def save(self, mesh, format, filename_prefix):
        _check_mesh(mesh)
        kinds = suffixes(mesh, format)

        def write(finals, temps):
            for suffix, data in mesh_files(mesh, finals[kinds[0]].stem, format).items():
                temps[suffix].write_bytes(data)

        path = host.save_output(filename_prefix, kinds, write, rename=safe_stem if format == "obj" else None)[kinds[0]]
        relative = path.relative_to(host.output_dir()).as_posix()
        entry = host.output_entry(path)
        return {"ui": {"3d": [entry], "files": [entry]}, "result": (relative,)}


class GeoDreamMeshToCoreMesh:
    DESCRIPTION = ("Converts the textured mesh to ComfyUI's core MESH (Y up, as SaveGLB writes it), for the core "
                   "SaveGLB and 3D nodes. ComfyUI versions whose MESH holds geometry only drop the texture.")
    CATEGORY = categories.MESH
    RETURN_TYPES = ("MESH",)
    RETURN_NAMES = ("mesh",)
    FUNCTION = "convert"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"mesh": (T.MESH, {"tooltip": "The textured mesh from DMTetFineTune."})}}

    def convert(self, mesh):
        _check_mesh(mesh)
        uvs = None if mesh.uvs is None else mesh.uvs[None].float()
        texture = None if mesh.texture is None else mesh.texture[None].float()
        return (host.core_mesh(to_gltf_frame(mesh.vertices)[None].float(), mesh.faces[None].long(), uvs, texture),)


class GeoDreamLoadMesh:
    DESCRIPTION = ("Reads a mesh file from ComfyUI's input folder (GLB, glTF, OBJ, PLY, OFF), every part of the scene "
                   "placed by its node transform with its own textures and colours, e.g. to score any mesh with Uni3D.")
    CATEGORY = categories.FILES
    RETURN_TYPES = (T.MESH,)
    RETURN_NAMES = ("mesh",)
    FUNCTION = "load"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "mesh_file": (host.listed_files(SUFFIXES), {"tooltip": "A mesh file in ComfyUI's input folder, or one "
                          "written to the output folder (e.g. by GeoDream Save Mesh), marked [output]."}),
            "up_axis": (["Y (glTF, Blender export)", "Z (GeoDream frame)"], {"tooltip":
                        "Which axis is up in the file. Files saved by GeoDream Save Mesh are Y up."}),
        }}

    @classmethod
    def IS_CHANGED(cls, mesh_file, **_):
        return host.file_fingerprint(host.annotated_path(mesh_file))

    @classmethod
    def VALIDATE_INPUTS(cls, mesh_file=None):
        if mesh_file is not None and not host.annotated_path(mesh_file).is_file():
            return f"GeoDream: no mesh file '{mesh_file}' (put it in ComfyUI's input folder)."
        return True

    def load(self, mesh_file, up_axis):
        return (load_mesh(host.annotated_path(mesh_file), y_up=up_axis.startswith("Y")),)


NODES = {
    "GeoDreamLoadMesh": (GeoDreamLoadMesh, "GeoDream Load Mesh"),
    "GeoDreamSaveMesh": (GeoDreamSaveMesh, "GeoDream Save Mesh"),
    "GeoDreamMeshToCoreMesh": (GeoDreamMeshToCoreMesh, "GeoDream Mesh to Core MESH"),
}
