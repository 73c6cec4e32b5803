"""The refined field of stage 3 (GEODREAM_FIELD): NeuS geometry from the cost volume, hash-grid colour, and a
neural environment map behind it.

    s(x) = f_g(E(x), V(x))        V learnable (a copy of the prior's volume), f_g frozen
    c(x) = sigmoid(MLP(h(x)))     texture_field.HashGridTexture: hash grid over the box, MLP 32 -> 64 -> 3 (release)
    inv_s = exp(10 * variance)    NeuS's deviation, as SparseNeuS parameterises it; frozen at the prior's value
                                  (the release's SingleVarianceNetwork registers it with requires_grad=False)

The DMTet stage reads only ``sdf``, ``color`` and ``bbox``."""
from __future__ import annotations

import copy
import json
import math
from dataclasses import asdict, dataclass, field as dc_field
from pathlib import Path

import torch
from safetensors.torch import save_file

from .. import model_files
from ..prior.cost_volume import CostVolume, check_volume
from ..tensor_checks import require_finite
from ..errors import GeoDreamError
from ..prior.geometry_decoder import GeometryDecoder
from ..texture.hash_grid import HashGridConfig
from .occupancy_grid import OccupancyGrid
from .sdf_gradient import Evaluator
from ..texture.environment_map import EnvironmentMap
from ..texture.texture_field import HashGridTexture


@dataclass
class FieldSettings:
    hash_grid: dict = dc_field(default_factory=lambda: HashGridConfig().to_dict())
    color_hidden: int = 64
    # SparseNeuS lod0's deviation is stored as `variance` with inv_s = exp(10 variance); 0.3 gives inv_s ~ 20.
    # Used only for a cost volume that does not carry the prior's own (CostVolume.inv_s).
    variance_init: float = 0.3
    background_hidden: int = 16

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2)


class NeuSField(torch.nn.Module):
    def __init__(self, cost_volume: CostVolume, settings: FieldSettings = FieldSettings()):
        super().__init__()
        self.settings = settings
        # A copy of f_g, so freezing it here never touches the prior's own decoder.
        self.decoder = copy.deepcopy(cost_volume.decoder).requires_grad_(False)
        # Channels-last: V's rows are the [D*H*W, C] table the written-out SDF gathers from (sdf_gradient.py), with
        # no copy forwards and its gradient in the same layout backwards. Always a copy: the optimiser must never
        # write into the input volume (ComfyUI caches it for other nodes), which may also be an inference tensor.
        self.volume = torch.nn.Parameter(cost_volume.volume.detach().float().clone(
            memory_format=torch.channels_last_3d))
        self.register_buffer("bbox", cost_volume.bbox.detach().clone().float())
        self.cost_volume = CostVolume(self.volume, self.decoder, self.bbox)
        # Start as sharp as the prior was trained (its f_g is frozen, so its SDF keeps the same scale).
        variance = settings.variance_init if cost_volume.inv_s is None else math.log(cost_volume.inv_s) / 10.0
        self.variance = torch.nn.Parameter(torch.tensor(float(variance)), requires_grad=False)
        self.texture = HashGridTexture(self.bbox, HashGridConfig(**settings.hash_grid), settings.color_hidden)
        self.background = EnvironmentMap(settings.background_hidden)
        # Free-space skipping for the renderer, measured by the refinement (saved with the field).
        self.occupancy = OccupancyGrid(self.bbox)
        self._evaluator = Evaluator()

    @property
    def inv_s(self) -> torch.Tensor:
        return torch.exp(self.variance * 10.0).clamp(1e-6, 1e6)

    def sdf(self, points: torch.Tensor) -> torch.Tensor:
        """Signed distance at world points [P, 3] -> [P]."""
        return self.cost_volume.sdf_values(points, self.volume).reshape(-1)

    def sdf_and_gradient(self, points: torch.Tensor, create_graph: bool) -> tuple[torch.Tensor, torch.Tensor]:
        """s(x) [P] and ds/dx [P, 3] at world points [P, 3]; with ``create_graph`` the gradient itself stays
        differentiable (NeuS's alpha uses it). The prior's f_g takes the written-out path of sdf_gradient.py (one
        graph; compiled with GEODREAM_COMPILE=1); any other decoder goes through autograd."""
        if isinstance(self.decoder, GeometryDecoder):
            with torch.set_grad_enabled(create_graph and torch.is_grad_enabled()):
                value, gradient = self._evaluator(self.decoder, self.volume, self.bbox, points.detach())
            return (value, gradient) if create_graph else (value.detach(), gradient.detach())
        with torch.enable_grad():
            points = points.detach().requires_grad_(True)
            value = self.sdf(points)
            (gradient,) = torch.autograd.grad(value.sum(), points, create_graph=create_graph)
        return value, gradient

    def color(self, points: torch.Tensor) -> torch.Tensor:
        """Albedo in 0..1 at world points [P, 3] -> [P, 3]."""
        return self.texture(points)

    def param_groups(self) -> dict[str, list[torch.nn.Parameter]]:
        """The release's optimiser groups (frozen f_g and the frozen deviation are in none of them)."""
        return {"volume": [self.volume], "hash_grid": self.texture.encoding_parameters(),
                "color_mlp": self.texture.network_parameters(), "background": list(self.background.parameters())}

    # --- files ------------------------------------------------------------------------------------------------
    def file_bytes(self) -> int:
        """About how large ``save``'s tensors file is, in bytes."""
        return sum(v.numel() * v.element_size() for v in self.state_dict().values())

    def save(self, path, settings_path=None) -> None:
        """Every tensor (f_g included) as .safetensors at ``path``, the settings as .json at ``settings_path``
        (default: beside it), written as given: callers make them atomic (host.save_output, atomic.atomic_write)."""
        path = Path(path)
        tensors = {k: v.detach().contiguous().cpu() for k, v in self.state_dict().items()}
        save_file(tensors, str(path if path.suffix == ".safetensors" else path.with_suffix(".safetensors")))
        settings_path = Path(settings_path) if settings_path else path.with_suffix(".json")
        settings_path.write_text(self.settings.to_json(), encoding="utf-8")

    @classmethod
    def load(cls, path, cost_volume: CostVolume) -> "NeuSField":
        """Rebuild a saved field; ``cost_volume`` supplies the decoder's structure, its tensors come from the file."""
        path = Path(path).with_suffix("")
        what, fix = "a field saved by GeoDream Save Field", ("Pick another saved field, or save this one again; "
                                                            "connect the cost volume it was refined from.")
        try:
            settings = FieldSettings(**json.loads(path.with_suffix(".json").read_text(encoding="utf-8")))
        except (OSError, ValueError, TypeError) as err:  # missing, not JSON, or settings of another version
            raise GeoDreamError(f"GeoDream: '{path.with_suffix('.json')}' is not the settings of {what} ({err}). "
                                f"{fix}") from err
        tensors = model_files.read_safetensors(path.with_suffix(".safetensors"), what, fix)[0]
        if "volume" not in tensors or "bbox" not in tensors:
            raise GeoDreamError(f"GeoDream: '{path.with_suffix('.safetensors')}' is not {what}: it looks like "
                                f"{model_files.identify(tensors.keys())} (no volume). {fix}")
        check_volume(tensors["volume"], tensors["bbox"], f"'{path.with_suffix('.safetensors')}'", fix,
                     cost_volume.volume.shape[1])
        for name, tensor in tensors.items():
            if not name.startswith("occupancy."):  # an unmeasured occupancy bound is +inf by design
                require_finite(tensor, f"'{name}' of '{path.with_suffix('.safetensors')}'")
        field = cls(CostVolume(tensors["volume"], cost_volume.decoder, tensors["bbox"], cost_volume.inv_s), settings)
        # A field saved before free-space skipping has no grid: it starts unmeasured (every cell occupied); one saved
        # before nerfacc's occupancy was kept has occupancy 0, so nothing is skipped until the grid is measured again.
        tensors.setdefault("occupancy.sdf_bound", field.occupancy.sdf_bound)
        tensors.setdefault("occupancy.occs", field.occupancy.occs)
        model_files.load_weights(field, tensors, path.with_suffix(".safetensors"), what, fix)
        return field
