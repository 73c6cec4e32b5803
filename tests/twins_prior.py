"""Tiny twins of the released SparseNeuS lod0 checkpoint: our PriorModel with random weights, written the way
One-2-3-45 saved ckpt_215000.pth (a dict of state dicts by network, torchsparse kernels [27, in, out])."""
import torch

from geodream_pack.geodream_ops.prior.model import PriorModel


def random_prior(seed: int = 0) -> PriorModel:
    """Random weights with what trained weights have and a random init lacks: InPlaceABN gammas stored negative in
    about a third of the channels (InPlaceABN scales by |gamma|, so its training never kept the sign), and running
    statistics far from any batch's (means around 3, variances 10-40), so using them instead of the batch's shows."""
    generator = torch.Generator().manual_seed(seed)
    model = PriorModel()
    with torch.no_grad():
        for name, tensor in model.state_dict().items():
            if name.endswith("num_batches_tracked"):
                continue
            if name.endswith(".variance"):  # NeuS's deviation: a plausible trained sharpness
                tensor.fill_(0.3 + 0.1 * float(torch.rand((), generator=generator)))
            elif name.endswith("running_var"):
                tensor.copy_(10.0 + 30.0 * torch.rand(tensor.shape, generator=generator))
            elif name.endswith("running_mean"):
                tensor.copy_(3.0 + torch.randn(tensor.shape, generator=generator))
            elif name.endswith("bias"):
                tensor.copy_(0.1 * torch.randn(tensor.shape, generator=generator))
            elif name.endswith("bn.weight"):  # InPlaceABN
                sign = torch.where(torch.rand(tensor.shape, generator=generator) < 1 / 3, -1.0, 1.0)
                tensor.copy_(sign * (1.0 + 0.1 * torch.randn(tensor.shape, generator=generator)))
            elif ".net.1.weight" in name:  # torchsparse's BatchNorm1d uses gamma as it is
                tensor.copy_(1.0 + 0.1 * torch.randn(tensor.shape, generator=generator))
            else:
                fan_in = tensor[0].numel()
                tensor.copy_(torch.randn(tensor.shape, generator=generator) / fan_in**0.5)
    return model.eval()


def torchsparse_kernel(weight: torch.Tensor) -> torch.Tensor:
    """[out, kx, ky, kz, in] -> torchsparse 1.4's [27, in, out], offset by offset as get_kernel_offsets orders
    them for odd kernels (x fastest, then y, then z)."""
    kernel = torch.empty(27, weight.shape[-1], weight.shape[0])
    k = 0
    for dz in (-1, 0, 1):
        for dy in (-1, 0, 1):
            for dx in (-1, 0, 1):
                kernel[k] = weight[:, dx + 1, dy + 1, dz + 1, :].t()
                k += 1
    return kernel


def release_checkpoint(model: PriorModel) -> dict:
    sections = {}
    for name, tensor in model.state_dict().items():
        section, _, rest = name.partition(".")
        if rest.endswith(".net.0.weight"):
            sections.setdefault(section, {})[rest[: -len("weight")] + "kernel"] = torchsparse_kernel(tensor)
        else:
            sections.setdefault(section, {})[rest] = tensor.clone()
    # What else the release file holds and the prior does not use.
    sections["rendering_network_lod0"] = {"lin0.weight": torch.zeros(4, 4)}
    return {**sections, "iter_step": 215000, "val_step": 0}


def sphere_init(decoder, radius: float, seed: int = 0, latent_std: float = 0.01):
    """NeuS's geometric initialisation of f_g: s(x) ~ |x| - radius (release frame), nudged a little by V(x), so a
    random twin still has a surface where every stage expects one."""
    generator = torch.Generator().manual_seed(seed)
    hidden = decoder.lin0.weight_v.shape[0]

    def set_layer(layer, weight, bias):
        layer.weight_v.copy_(weight)
        layer.weight_g.copy_(weight.norm(dim=1, keepdim=True))
        layer.bias.copy_(bias)

    with torch.no_grad():
        w0 = torch.zeros_like(decoder.lin0.weight_v)
        w0[:, :3] = torch.randn(hidden, 3, generator=generator) * (2 / hidden) ** 0.5
        set_layer(decoder.lin0, w0, torch.zeros(hidden))
        w1 = torch.randn(decoder.lin1.weight_v.shape, generator=generator) * latent_std
        w1[:, :hidden] = torch.randn(hidden, hidden, generator=generator) * (2 / hidden) ** 0.5
        set_layer(decoder.lin1, w1, torch.zeros(hidden))
        w2 = torch.randn(decoder.lin2.weight_v.shape, generator=generator) * latent_std
        w2[0, :hidden] = torch.pi**0.5 / hidden**0.5 + 1e-4 * torch.randn(hidden, generator=generator)
        b2 = torch.zeros(decoder.lin2.bias.shape)
        b2[0] = -radius
        set_layer(decoder.lin2, w2, b2)
    return decoder


def write_prior_checkpoint(folder, seed: int = 0, name: str = "ckpt_215000.pth", sphere_radius: float | None = None):
    """The twin in the release's file layout; with ``sphere_radius`` its f_g starts as a sphere (sphere_init)."""
    model = random_prior(seed)
    if sphere_radius is not None:
        sphere_init(model.sdf_network_lod0.sdf_layer, sphere_radius, seed)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    torch.save(release_checkpoint(model), path)
    return path, model
