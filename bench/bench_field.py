"""The refined field's per-sample cost against its op floor, before and after a change, in one process.

One "field step" is what a refinement does with every sample it keeps: s(x) and ds/dx with the graph kept
(NeuSField.sdf_and_gradient, create_graph=True), the albedo c(x), and the backward of a loss on all three into the
volume V and the hash grid. The floor is the same work as bare ops on precomputed inputs, each timed alone:
  - volume gather: one [P, 8, 16] gather of the cell corners from the 150^3 x 16 table, contracted with the
    [P, 4, 8] trilinear weights (value and three slopes), and its scatter back into a zeroed table gradient;
  - f_g chain: sdf_gradient.decoder_chain from E(u), V(x) and dV/dx (the three layers and their written-out
    backward), forward and backward;
  - hash-grid gather: the 16 levels' [P, 16, 8] rows of 2 features with their weights, and the scatter back;
  - colour MLP: 32 -> 64 -> 3 and its sigmoid, forward and backward.
field/floor is the field step over the sum of those. "before" is another revision of the pack (git archive),
imported in the same process under another package name and fed the same weights and points; rounds alternate
between all cases, so a shared machine's load falls on each alike (read the ratios). Graph memory: bytes the
autograd graph holds for the backward, parameters excluded (device_memory.GraphBytes' count).

    python bench/bench_field.py --before main --write       # the release's sizes: 131,072 points, 16 x 150^3, 2^19
    python bench/bench_field.py --before main --mesh --write   # Prior To Mesh at 128^3 against marching cubes alone

``--mesh`` times Prior To Mesh (marching_cubes.extract_mesh) at 128^3 on an object-like prior -- the real f_g in
NeuS's sphere start (tests/twins_prior.sphere_init), dented by a smooth random 16 x 150^3 V -- before and after,
against skimage's marching cubes alone on the same (dense) grid, and checks that both revisions give the same mesh.
"""
from __future__ import annotations

import argparse
import importlib.util
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from headless.pack import load_pack  # noqa: E402
from stage_timing import export, write_section  # noqa: E402  (bench/ is the script's folder)

SECTION = "## Field per-sample cost"
MESH_SECTION = "## Prior To Mesh"


def load_tree(root: Path, name: str):
    """The pack at ``root`` imported as package ``name`` (beside this tree's ``geodream_pack``)."""
    spec = importlib.util.spec_from_file_location(name, root / "__init__.py", submodule_search_locations=[str(root)])
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def release_field(ops, device, resolution: int = 150, grid: dict | None = None, state: dict | None = None):
    """A NeuSField of ``ops`` at the release's sizes (random V and f_g; ``state`` gives every tensor instead)."""
    torch.manual_seed(0)
    volume = 0.1 * torch.randn(1, 16, resolution, resolution, resolution)
    decoder = ops.prior.geometry_decoder.GeometryDecoder().requires_grad_(False)
    cost_volume = ops.prior.cost_volume.CostVolume(volume, decoder, ops.prior.release_frame.BBOX.clone())
    settings = ops.refine.neus_field.FieldSettings(**({"hash_grid": grid} if grid else {}))
    field = ops.refine.neus_field.NeuSField(cost_volume, settings)
    if state is not None:
        field.load_state_dict(state)
    return field.to(device)


class Case:
    """One timed callable, its times over the rounds and the graph bytes of its last call."""

    def __init__(self, name, fn, parameters=()):
        self.name, self.fn, self.times, self.graph = name, fn, [], 0
        self._params = {p.untyped_storage().data_ptr() for p in parameters}

    def run(self, sync):
        seen, total = set(self._params), [0]

        def pack(tensor):
            ptr = tensor.untyped_storage().data_ptr()
            if ptr not in seen:
                seen.add(ptr)
                total[0] += tensor.untyped_storage().nbytes()
            return tensor

        sync()
        start = time.perf_counter()
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
            self.fn()
        sync()
        self.times.append(time.perf_counter() - start)
        self.graph = total[0]

    @property
    def seconds(self) -> float:
        return statistics.median(self.times)


def field_case(name, field, points, weights):
    def step():
        field.zero_grad(set_to_none=True)
        sdf, gradient = field.sdf_and_gradient(points, create_graph=True)
        color = field.color(points)
        (sdf.square().sum() + (gradient * weights).sum() + color.square().sum()).backward()

    return Case(name, step, field.parameters())


def floor_cases(ops, field, points):
    """The bare ops of a field step on ``points`` (this tree's primitives), inputs precomputed."""
    sdf_gradient, hash_grid = ops.refine.sdf_gradient, ops.texture.hash_grid
    device = points.device
    count = points.shape[0]
    volume = field.volume.detach()
    table = torch.nn.Parameter(volume.permute(0, 2, 3, 4, 1).reshape(-1, volume.shape[1]).clone())
    rows = torch.randint(0, table.shape[0], (count, 8), device=device)
    corner_weights = torch.rand(count, 4, 8, device=device)
    u, encoded = sdf_gradient.position_encoding(points, field.decoder.frame)
    latent = (0.1 * torch.randn(count, 16, device=device)).requires_grad_(True)
    latent_slope = torch.randn(count, 3, 16, device=device).requires_grad_(True)
    encoding = field.texture.encoding
    hash_rows, hash_weights = encoding._rows_and_weights((points - field.bbox[0]) / (field.bbox[1] - field.bbox[0]))
    hash_table = torch.nn.Parameter(encoding.table().detach().clone())
    features = torch.randn(count, encoding.n_output_dims, device=device).requires_grad_(True)
    network = field.texture.network

    def volume_gather():
        table.grad = None
        hash_grid.WeightedRows.apply(table, rows, corner_weights).square().sum().backward()

    def chain():
        latent.grad = latent_slope.grad = None
        sdf, gradient = sdf_gradient.decoder_chain(field.decoder, u, encoded, latent, latent_slope)
        (sdf.square().sum() + gradient.sum()).backward()

    def hash_gather():
        hash_table.grad = None
        hash_grid.WeightedRows.apply(hash_table, hash_rows, hash_weights[..., None, :]).square().sum().backward()

    def mlp():
        network.zero_grad(set_to_none=True)
        features.grad = None
        torch.sigmoid(network(features)).square().sum().backward()

    keep = [table, hash_table, *network.parameters()]
    return [Case("volume gather", volume_gather, keep), Case("f_g chain", chain, keep),
            Case("hash-grid gather", hash_gather, keep), Case("colour MLP", mlp, keep)]


def measure(ops, device, count: int, rounds: int, before=None, sync=lambda: None, grid: dict | None = None,
            resolution: int = 150, tcnn: bool = False) -> dict:
    """Median seconds of the field step (this tree's, and ``before``'s package when given) and of each floor op
    over ``rounds`` interleaved rounds after a warm-up; the numbers of both fields are compared first. The field's
    hash grid runs in pure PyTorch ("field"); with ``tcnn`` also through tiny-cuda-nn ("field (tiny-cuda-nn)")."""
    field = release_field(ops, device, resolution, grid)
    field.texture.encoding.backend = "torch"
    torch.manual_seed(1)
    points = (field.bbox[0] + (field.bbox[1] - field.bbox[0]) * torch.rand(count, 3, device=device)).contiguous()
    weights = torch.randn(count, 3, device=device)
    cases = [field_case("field", field, points, weights)]
    if tcnn:
        torch_step = cases[0].fn

        def tcnn_step():
            field.texture.encoding.backend = "tcnn"
            try:
                torch_step()
            finally:
                field.texture.encoding.backend = "torch"

        cases.append(Case("field (tiny-cuda-nn)", tcnn_step, field.parameters()))
    if before is not None:
        # Contiguous copies: the other revision keeps its own layout of V (load_state_dict may take the tensor's).
        state = {k: v.detach().cpu().contiguous() for k, v in field.state_dict().items()}
        old = release_field(before, device, resolution, grid, state)
        cases.append(field_case("field (before)", old, points, weights))
        check_same_numbers(field, old, points[:4096])
    cases += floor_cases(ops, field, points)
    for case in cases:  # warm-up
        case.run(sync)
        case.times.clear()
    for _ in range(rounds):
        for case in cases:
            case.run(sync)
    return {case.name: case for case in cases}


def check_same_numbers(new, old, points):
    """The two revisions' s, ds/dx, c and their gradients agree (float32 rounding)."""
    outs = []
    for field in (new, old):
        field.zero_grad(set_to_none=True)
        sdf, gradient = field.sdf_and_gradient(points, create_graph=True)
        color = field.color(points)
        (sdf.square().sum() + gradient.sum() + color.sum()).backward()
        outs.append([t.detach() for t in (sdf, gradient, color, field.volume.grad, field.texture.encoding.params.grad)])
        field.zero_grad(set_to_none=True)
    for a, b, what in zip(*outs, ["s", "ds/dx", "c", "dL/dV", "dL/dgrid"]):
        scale = b.abs().max().clamp_min(1e-12)
        error = float((a - b).abs().max() / scale)
        if error > 1e-4:
            raise SystemExit(f"bench_field: {what} differs between the revisions by {error:.2e} of its largest value")


def floor_of(cases: dict) -> float:
    return sum(cases[name].seconds for name in ("volume gather", "f_g chain", "hash-grid gather", "colour MLP"))


def report(cases: dict, count: int, rounds: int, before: str | None, where: str, command: str) -> str:
    floor = floor_of(cases)
    lines = [SECTION, "",
             f"`{command}`: {where}, torch {torch.__version__}; {count:,} points in the release's box, volume 16 x "
             f"150^3, f_g with random weights, hash grid 16 x 2 of 2^19 rows; median of {rounds} interleaved rounds "
             "after a warm-up, one process (bench_field.py's docstring says what each row runs). The ratios are "
             "what to read on a shared machine.", "",
             "| what | s (fwd + bwd) | samples / s | / floor | graph MB |", "|---|---:|---:|---:|---:|"]
    names = (["field (before)"] if before else []) + ["field"]
    for name in names:
        case = cases[name]
        label = f"field, {before} (before)" if name == "field (before)" else "field, this tree"
        lines.append(f"| {label} | {case.seconds:.3f} | {count / case.seconds:,.0f} | {case.seconds / floor:.2f} | "
                     f"{case.graph / 2 ** 20:.0f} |")
    for name in ("volume gather", "f_g chain", "hash-grid gather", "colour MLP"):
        case = cases[name]
        lines.append(f"| floor: {name} | {case.seconds:.3f} | {count / case.seconds:,.0f} | "
                     f"{case.seconds / floor:.2f} | {case.graph / 2 ** 20:.0f} |")
    lines.append(f"| floor (sum) | {floor:.3f} | {count / floor:,.0f} | 1.00 | |")
    if before:
        ratio = cases["field (before)"].seconds / cases["field"].seconds
        lines += ["", f"This tree's field step is {ratio:.2f}x as fast as {before}'s, with the same numbers "
                      "(checked in the run: s, ds/dx, c and both gradients within float32 rounding)."]
    return "\n".join(lines) + "\n"


def object_like_cost_volume(ops, resolution: int = 150, state: dict | None = None):
    """The release's f_g in NeuS's sphere start, V a smooth random 16 x ``resolution``^3 volume (``state``: f_g's
    weights instead)."""
    from tests.twins_prior import sphere_init

    decoder = ops.prior.geometry_decoder.GeometryDecoder()
    decoder = sphere_init(decoder, radius=0.5) if state is None else decoder
    if state is not None:
        decoder.load_state_dict(state)
    torch.manual_seed(0)
    volume = torch.nn.functional.interpolate(torch.randn(1, 16, 4, 4, 4), size=(resolution,) * 3, mode="trilinear")
    return ops.prior.cost_volume.CostVolume(volume, decoder.requires_grad_(False), ops.prior.release_frame.BBOX.clone())


def crossed_corners(grid: torch.Tensor) -> torch.Tensor:
    """[R, R, R] bool: the corners of the cells of ``grid`` [R, R, R] (values minus the level) that marching cubes
    meshes (a sign change among their 8 corners): the fewest f_g queries that give the dense grid's mesh."""
    n = grid.shape[0] - 1
    cube = torch.stack([grid[i:n + i, j:n + j, k:n + k] for i in (0, 1) for j in (0, 1) for k in (0, 1)])
    crossed = (cube.amin(0) <= 0) & (cube.amax(0) >= 0)
    corners = torch.zeros(grid.shape, dtype=torch.bool)
    for i in (0, 1):
        for j in (0, 1):
            for k in (0, 1):
                corners[i:n + i, j:n + j, k:n + k] |= crossed
    return corners


def measure_mesh(ops, before, resolution: int, rounds: int, threads: list[int], device=torch.device("cpu"),
                 sync=lambda: None, volume_resolution: int = 150) -> dict:
    """Median seconds of Prior To Mesh (each revision), of f_g alone at the crossed cells' corners (its floor, as
    the node queries them: in chunks) at each of ``threads``, and of marching cubes alone on the dense grid (one
    thread: skimage's), interleaved; the f_g queries this tree made; SystemExit when the meshes differ. This tree's
    cost volume on ``device`` (``sync``: waits for it), the other revision's on the CPU."""
    from skimage.measure import marching_cubes

    mc = ops.prior.marching_cubes
    ours = object_like_cost_volume(ops, volume_resolution)
    ours = ops.prior.cost_volume.CostVolume(ours.volume.to(device), ours.decoder.to(device), ours.bbox.to(device))
    queries = []
    counting = ops.prior.cost_volume.CostVolume(ours.volume, ours.decoder, ours.bbox)
    counting.sdf_values = lambda points, volume=None: queries.append(len(points)) or ours.sdf_values(points, volume)
    mesh = mc.extract_mesh(counting, resolution)
    grid = mc.sdf_grid(ours, resolution, block=1)
    spacing = tuple(((ours.bbox[1] - ours.bbox[0]) / (resolution - 1)).flip(0).tolist())
    # The dense grid's mesh: the same signs everywhere, the same values at every corner of a meshed cell.
    band, corners = mc.sdf_grid(ours, resolution), crossed_corners(grid)
    if not torch.equal(band > 0, grid > 0) or not torch.equal(band[corners], grid[corners]):
        raise SystemExit("bench_field: Prior To Mesh's grid does not give the dense grid's mesh")
    index = corners.nonzero().to(device)
    lo, hi = ours.bbox[0], ours.bbox[1]
    floor_points = torch.stack([lo[k] + (hi[k] - lo[k]) * index[:, 2 - k] / (resolution - 1) for k in range(3)], -1)

    def threaded(count, fn):
        def run():
            torch.set_num_threads(count)
            fn()
            sync()
        return run

    cases = [Case("marching cubes alone", threaded(1, lambda: marching_cubes(grid.numpy(), 0.0, spacing=spacing,
                                                                              gradient_direction="ascent")))]
    for count in threads:
        cases.append(Case(f"Prior To Mesh, {count}", threaded(count, lambda: mc.extract_mesh(ours, resolution))))
        cases.append(Case(f"floor, {count}", threaded(count, lambda: mc._query(ours, floor_points, lambda: None))))
    if before is not None:
        old = object_like_cost_volume(before, volume_resolution, state=ours.decoder.cpu().state_dict())
        ours.decoder.to(device)
        old_mesh = before.prior.marching_cubes.extract_mesh(old, resolution)
        # Same faces; vertices as close as f_g's float32 rounding (the SDF row's own product sums in another order)
        # lets marching cubes' interpolation put them.
        if not torch.equal(mesh.faces, old_mesh.faces) or mesh.vertices.shape != old_mesh.vertices.shape:
            raise SystemExit("bench_field: Prior To Mesh's faces differ between the revisions")
        moved = float((mesh.vertices - old_mesh.vertices).abs().max())
        if moved > 1e-4:
            raise SystemExit(f"bench_field: Prior To Mesh's vertices moved by {moved:.2e} between the revisions")
        for count in threads:
            cases.append(Case(f"Prior To Mesh (before), {count}",
                              threaded(count, lambda: before.prior.marching_cubes.extract_mesh(old, resolution))))
    else:
        moved = None
    for _ in range(rounds):
        for case in cases:
            case.run(lambda: None)
    return {"cases": {case.name: case for case in cases}, "queries": sum(queries), "faces": mesh.faces.shape[0],
            "moved": moved, "floor_points": len(floor_points), "threads": threads}


def mesh_report(result: dict, resolution: int, rounds: int, before: str | None, where: str, command: str) -> str:
    cases = result["cases"]
    alone = cases["marching cubes alone"].seconds
    lines = [MESH_SECTION, "",
             f"`{command}`: {where}, torch {torch.__version__}; {resolution}^3 grid over the release's box, the "
             "real f_g in NeuS's sphere start dented by a smooth random 16 x 150^3 V (object-like); median of "
             f"{rounds} interleaved rounds; {result['faces']:,} faces, the dense grid's (checked in the run)"
             + (f", the same in both revisions, vertices within {result['moved']:.1e}" if result["moved"] is not None
                else "")
             + ". 'marching cubes alone': skimage's on the dense grid, as the node calls it (one thread: skimage's "
             "is not threaded). 'f_g at the crossed cells' corners': f_g alone at the corners of the cells marching "
             "cubes meshes, the fewest queries that give this mesh (its floor on this machine).", "",
             "| what | torch threads | s | / marching cubes alone | f_g queries |", "|---|---:|---:|---:|---:|"]
    for count in result["threads"]:
        if before:
            old = cases[f"Prior To Mesh (before), {count}"].seconds
            lines.append(f"| Prior To Mesh, {before} (before) | {count} | {old:.3f} | {old / alone:.1f} | |")
        new = cases[f"Prior To Mesh, {count}"].seconds
        lines.append(f"| Prior To Mesh, this tree | {count} | {new:.3f} | {new / alone:.1f} | "
                     f"{result['queries']:,} |")
        floor = cases[f"floor, {count}"].seconds
        lines.append(f"| f_g at the crossed cells' corners | {count} | {floor:.3f} | {floor / alone:.1f} | "
                     f"{result['floor_points']:,} |")
    lines.append(f"| marching cubes alone | 1 | {alone:.3f} | 1.0 | |")
    reading = []
    for count in result["threads"]:
        new, floor = cases[f"Prior To Mesh, {count}"].seconds, cases[f"floor, {count}"].seconds
        speedup = f"{cases[f'Prior To Mesh (before), {count}'].seconds / new:.1f}x as fast as {before}'s, " if before else ""
        reading.append(f"at {count} thread(s) Prior To Mesh is {speedup}{new / alone:.1f}x marching cubes alone, and "
                       f"f_g alone at the fewest points {floor / alone:.1f}x")
    lines += ["", "Read: " + "; ".join(reading) + f". It asks f_g at {result['queries'] / result['floor_points']:.1f}x "
              "the fewest points. Wherever f_g alone at the fewest points costs more than marching cubes alone, no "
              "Prior To Mesh that gives this mesh can come within 2x of marching cubes on that machine."]
    return "\n".join(lines) + "\n"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--before", help="revision to compare with (e.g. main)")
    parser.add_argument("--points", type=int, default=131072)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", default="1", help="torch threads; with --mesh a list, e.g. 1,2")
    parser.add_argument("--mesh", action="store_true", help="Prior To Mesh against marching cubes instead")
    parser.add_argument("--resolution", type=int, default=128, help="Prior To Mesh's grid (with --mesh)")
    parser.add_argument("--write", action="store_true", help="replace bench/RESULTS.md's section")
    args = parser.parse_args(argv)
    threads = [int(count) for count in args.threads.split(",")]
    torch.set_num_threads(threads[0])
    ops = load_pack().geodream_ops
    before = load_tree(export(args.before), "geodream_before").geodream_ops if args.before else None
    if args.mesh:
        measured = measure_mesh(ops, before, args.resolution, args.rounds, threads)
        flags = " --mesh" + (f" --resolution {args.resolution}" if args.resolution != 128 else "")
        flags += f" --threads {args.threads}" if args.threads != "1" else ""
    else:
        measured = measure(ops, torch.device("cpu"), args.points, args.rounds, before)
        flags = f" --points {args.points}" if args.points != 131072 else ""
    with open("/proc/loadavg", encoding="ascii") as f:
        load = f.read().split()[0]
    where = f"CPU {platform.machine()}, {args.threads} torch thread(s), load average {load} at the end"
    where = f"CPU {platform.machine()}, load average {load} at the end" if args.mesh else where
    command = f"python bench/bench_field.py{flags}" + (f" --before {args.before}" if args.before else "") + " --write"
    if args.mesh:
        text = mesh_report(measured, args.resolution, args.rounds, args.before, where, command)
    else:
        text = report(measured, args.points, args.rounds, args.before, where, command)
    print(text)
    if args.write:
        write_section(text, ROOT / "bench" / "RESULTS.md", MESH_SECTION if args.mesh else SECTION)


if __name__ == "__main__":
    main()
