// Draws a GLB or an OBJ (with its MTL and texture) into a canvas with orbit controls. No ComfyUI imports: the
// browser test loads it on a plain page. Imports are relative to this module, so the pack folder may be renamed or
// lower-cased by an installer; three.js is vendored as .mjs so that ComfyUI does not load it as an extension.
import * as THREE from "./vendor/three/build/three.module.mjs";
import { GLTFLoader } from "./vendor/three/examples/jsm/loaders/GLTFLoader.mjs";
import { MTLLoader } from "./vendor/three/examples/jsm/loaders/MTLLoader.mjs";
import { OBJLoader } from "./vendor/three/examples/jsm/loaders/OBJLoader.mjs";
import { OrbitControls } from "./vendor/three/examples/jsm/controls/OrbitControls.mjs";

export const BACKGROUND = 0x1e1e1e;
// Matches the pack's release views: the camera looks at the front, a little from above.
const VIEW_ELEVATION_DEG = 15;

function frame(camera, controls, object) {
  const box = new THREE.Box3().setFromObject(object);
  const center = box.getCenter(new THREE.Vector3());
  const radius = Math.max(box.getSize(new THREE.Vector3()).length() / 2, 1e-6);
  // Distance at which the bounding sphere fills the vertical field of view.
  const distance = radius / Math.sin(THREE.MathUtils.degToRad(camera.fov / 2));
  const el = THREE.MathUtils.degToRad(VIEW_ELEVATION_DEG);
  // glTF is Y up with the front facing +Z, so the front view sits on +Z.
  camera.position.copy(center).add(new THREE.Vector3(0, Math.sin(el), Math.cos(el)).multiplyScalar(distance));
  camera.near = distance / 100;
  camera.far = distance * 100;
  camera.updateProjectionMatrix();
  controls.target.copy(center);
  controls.update();
}

/**
 * An OBJ with the material library it names (`mtllib`), whose textures load from the same folder. `fileURL(name)`
 * is the URL of a file beside the OBJ; it must end with the name, which is how MTLLoader resolves texture names.
 */
async function loadOBJ(url, fileURL) {
  const response = await fetch(url);
  if (!response.ok) throw new Error(`GeoDream viewer: ${response.status} for ${url}`);
  const text = await response.text();
  const loader = new OBJLoader();
  const library = /^mtllib\s+(.+?)\s*$/m.exec(text)?.[1];
  if (library) {
    const materials = await new MTLLoader().setResourcePath(fileURL("")).loadAsync(fileURL(library));
    // Draw once the textures are in: until then three.js samples an empty texture.
    const textures = new THREE.LoadingManager();
    const loaded = new Promise((resolve) => { textures.onLoad = resolve; });
    materials.setManager(textures);
    materials.preload();
    loader.setMaterials(materials);
    const maps = Object.values(materials.materialsInfo).some((info) => Object.keys(info).some((k) => k.startsWith("map_")));
    if (maps) await loaded;
  }
  return loader.parse(text);
}

/**
 * Load the mesh at `url` (`format` "glb"/"gltf", or "obj" with `fileURL(name)` giving its MTL and texture beside
 * it) and draw it into `canvas`; dragging orbits, the wheel zooms.
 * Resolves once the first frame is drawn, to {render, dispose, scene}.
 */
export async function showMesh(canvas, url, { background = BACKGROUND, format = "glb", fileURL = null } = {}) {
  // preserveDrawingBuffer keeps the last frame readable (snapshots, the browser test).
  const renderer = new THREE.WebGLRenderer({ canvas, antialias: true, preserveDrawingBuffer: true });
  renderer.setPixelRatio(window.devicePixelRatio || 1);
  const scene = new THREE.Scene();
  scene.background = new THREE.Color(background);
  // A soft sky plus a key light from the upper right, so neighbouring faces differ in shade.
  scene.add(new THREE.HemisphereLight(0xffffff, 0x404040, 1.2));
  const sun = new THREE.DirectionalLight(0xffffff, 2.0);
  sun.position.set(2, 3, 2);
  scene.add(sun);
  const camera = new THREE.PerspectiveCamera(40, 1, 0.01, 100);
  const controls = new OrbitControls(camera, canvas);

  const render = () => {
    const width = canvas.clientWidth || canvas.width, height = canvas.clientHeight || canvas.height;
    if (width && height) {
      renderer.setSize(width, height, false);
      camera.aspect = width / height;
      camera.updateProjectionMatrix();
    }
    renderer.render(scene, camera);
  };
  // Draw on demand (orbiting, resizing) instead of every animation frame: the editor may show many nodes.
  controls.addEventListener("change", render);
  const resize = new ResizeObserver(render);
  resize.observe(canvas);

  const object = format === "obj" ? await loadOBJ(url, fileURL) : (await new GLTFLoader().loadAsync(url)).scene;
  scene.add(object);
  frame(camera, controls, object);
  render();

  const dispose = () => {
    resize.disconnect();
    controls.dispose();
    scene.traverse((o) => {
      o.geometry?.dispose();
      for (const m of [o.material].flat().filter(Boolean)) {
        Object.values(m).forEach((v) => v?.isTexture && v.dispose());
        m.dispose();
      }
    });
    renderer.dispose();
  };
  return { render, dispose, scene };
}
