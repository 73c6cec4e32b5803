"""A tiny twin of rembg's U²-Net file (u2net.onnx): an ONNX graph with the published model's interface, input
``input.1`` float32 [1, 3, 320, 320] and seven saliency maps [1, 1, 320, 320] (the first is the fused one rembg
reads), here one 1x1 convolution and a sigmoid. Written with the ``onnx`` package, read by onnxruntime as the real
file is."""
import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OUTPUTS = [str(n) for n in range(1959, 1966)]  # rembg's u2net.onnx names its seven side outputs by number


def twin_weights(seed: int = 0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(1, 3, 1, 1)).astype(np.float32) * 2, rng.normal(size=(1,)).astype(np.float32)


def write_u2net(path, seed: int = 0):
    weight, bias = twin_weights(seed)
    nodes = [helper.make_node("Conv", ["input.1", "w", "b"], ["logits"]),
             helper.make_node("Sigmoid", ["logits"], [OUTPUTS[0]])]
    nodes += [helper.make_node("Identity", [OUTPUTS[0]], [name]) for name in OUTPUTS[1:]]
    graph = helper.make_graph(
        nodes, "u2net_twin",
        [helper.make_tensor_value_info("input.1", TensorProto.FLOAT, [1, 3, 320, 320])],
        [helper.make_tensor_value_info(name, TensorProto.FLOAT, [1, 1, 320, 320]) for name in OUTPUTS],
        initializer=[numpy_helper.from_array(weight, "w"), numpy_helper.from_array(bias, "b")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 11)])
    model.ir_version = 6
    onnx.checker.check_model(model)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))
    return path
