"""Playing by ComfyUI's memory manager, with a stand-in of its modules (comfy.model_management, comfy.utils,
folder_paths): before a stage moves its models to the compute device it asks ComfyUI to free their size (plus its
inference reserve) there, and afterwards they are on ComfyUI's offload device and the cache is emptied, also when
the stage fails. Outside ComfyUI the fallback empties CUDA's cache only where there is one."""
import sys
import types

import pytest
import torch

from geodream_pack.nodes import host, multiview

RESERVE = 1000  # the stand-in's minimum_inference_memory


@pytest.fixture
def comfy(monkeypatch):
    """Records every call in order; the compute device is the CPU (a CI machine) named apart from the offload
    device only by the calls it is given to."""
    log = []
    mm = types.ModuleType("comfy.model_management")
    mm.get_torch_device = lambda: torch.device("cpu")
    mm.unet_offload_device = lambda: torch.device("cpu")
    mm.minimum_inference_memory = lambda: RESERVE
    mm.free_memory = lambda memory_required, device, keep_loaded=(): log.append(("free_memory", memory_required,
                                                                                 device))
    mm.soft_empty_cache = lambda force=False: log.append(("soft_empty_cache",))
    mm.throw_exception_if_processing_interrupted = lambda: None
    utils = types.ModuleType("comfy.utils")
    utils.ProgressBar = lambda total: types.SimpleNamespace(update_absolute=lambda value, total=None: None)
    package = types.ModuleType("comfy")
    package.model_management, package.utils = mm, utils
    for name, module in (("comfy", package), ("comfy.model_management", mm), ("comfy.utils", utils),
                         ("folder_paths", types.ModuleType("folder_paths"))):
        monkeypatch.setitem(sys.modules, name, module)
    monkeypatch.delenv("GEODREAM_DEVICE", raising=False)
    assert host.in_comfyui()
    return log


class Recorded(torch.nn.Module):
    """A model whose moves go to the same log, so their order against ComfyUI's calls shows."""

    def __init__(self, log, features=10):
        super().__init__()
        self.log = log
        self.layer = torch.nn.Linear(features, features)  # 110 float32 parameters: 440 bytes

    def to(self, *args, **kwargs):
        self.log.append(("to", *[str(a) for a in args]))
        return super().to(*args, **kwargs)


def test_stage_frees_room_before_moving_and_offloads_after(comfy):
    model = Recorded(comfy)
    assert host.module_bytes([model]) == 440 and host.module_bytes([model, model], torch.float16) == 220
    mv_model = types.SimpleNamespace(modules=lambda: [model])
    out = multiview.run_on_device(mv_model, torch.float16, "test", 1, lambda on_step: comfy.append(("work",)) or 7)
    assert out == 7
    # fp16 halves the 110 parameters' 440 bytes: ComfyUI frees 220 bytes plus its reserve before the move.
    assert comfy == [("free_memory", 220 + RESERVE, torch.device("cpu")), ("to", "cpu"), ("to", "torch.float16"),
                     ("work",), ("to", "cpu"), ("soft_empty_cache",)]


def test_a_failing_stage_still_offloads(comfy):
    model = Recorded(comfy)

    def fail(on_step):
        raise host.Interrupted("stop")

    with pytest.raises(host.Interrupted):
        multiview.run_on_device(types.SimpleNamespace(modules=lambda: [model]), None, "test", 1, fail)
    assert comfy[-2:] == [("to", "cpu"), ("soft_empty_cache",)]


def test_objects_that_keep_their_device_move_through_their_own_to(comfy):
    moves = []
    with host.on_device([torch.nn.Linear(2, 2)], working_bytes=5, move=lambda where: moves.append(str(where))):
        assert moves == ["cpu"]
    assert moves == ["cpu", "cpu"]
    assert comfy[0] == ("free_memory", 6 * 4 + 5 + RESERVE, torch.device("cpu"))


def test_outside_comfyui_only_cuda_caches_are_emptied(monkeypatch):
    emptied = []
    monkeypatch.setattr(torch.cuda, "empty_cache", lambda: emptied.append(1))
    host.make_room(10, torch.device("cpu"))
    assert emptied == []
    host.make_room(10, torch.device("cuda"))
    assert emptied == [1]
