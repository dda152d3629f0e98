"""convcore with static types: `mypy --strict examples/python/typed_example.py` is clean
(CI checks it), and it runs: `python examples/python/typed_example.py`.

What the annotations give:
* float32 arrays in give float32 arrays out (and float64 float64): the results below are
  assigned to NDArray[np.float32] / NDArray[np.float64] variables without a cast;
* layout, shape_rule, padding strings and activation are Literal types, stride and
  dilation are int | (int, int): `padding="smae"`, `layout="nhwc"` or `stride=1.5` are
  type errors (tests/typing/bad_calls.py);
* a layer's gradients are Optional (None until the first backward() and after
  zero_grad()): narrow them (`assert layer.grad_weight is not None`, or skip None in the
  `parameters()` loop) before the update.
"""
from __future__ import annotations

from typing import Optional

import numpy as np
from numpy.typing import NDArray

import convcore
from convcore import Conv2d, conv2d, conv2d_backward
from convcore.cs231n import conv_backward_fast, conv_forward_fast


def training_step(layer: Conv2d, x: NDArray[np.float32], target: NDArray[np.float32],
                  lr: float) -> float:
    """One SGD step on 0.5·|layer(x) - target|²; returns the loss before the step."""
    layer.zero_grad()
    y = layer.forward(x)
    diff = y - target
    dx: Optional[NDArray[np.floating]] = layer.backward(diff)
    assert dx is None or dx.shape == x.shape
    # grad_weight is Optional until backward(); after it, narrow and update in place.
    assert layer.grad_weight is not None
    layer.weight -= lr * layer.grad_weight
    # Or the optimiser loop, which skips parameters without a gradient:
    for p, g in layer.parameters():
        if g is not None and p is not layer.weight:
            p -= lr * g
    return float(0.5 * np.sum(diff * diff))


def main() -> None:
    rng = np.random.default_rng(0)

    # -- a Conv2d layer trained a few steps --------------------------------------------
    layer = Conv2d(3, 8, 3, stride=1, padding="same", dilation=1, groups=1, bias=True,
                   layout="NCHW", shape_rule="strict", activation="relu", dtype="float32",
                   rng=0, requires_input_grad=False, init="he")
    x: NDArray[np.float32] = rng.standard_normal((4, 3, 16, 16), dtype=np.float32)
    target: NDArray[np.float32] = np.zeros((4, 8, 16, 16), np.float32)
    losses = [training_step(layer, x, target, 1e-3) for _ in range(3)]
    assert losses[-1] < losses[0], losses
    print(f"Conv2d training: loss {losses[0]:.1f} -> {losses[-1]:.1f}")

    # -- conv2d with every keyword: float32 in, float32 out -------------------------------
    xh: NDArray[np.float32] = rng.standard_normal((2, 17, 17, 4), dtype=np.float32)
    w: NDArray[np.float32] = rng.standard_normal((6, 3, 3, 2), dtype=np.float32)
    b: NDArray[np.float32] = np.zeros(6, np.float32)
    out: NDArray[np.float32] = np.empty((2, 8, 8, 6), np.float32)
    y32: NDArray[np.float32] = conv2d(xh, w, b, stride=(2, 2), padding=(1, 0, 1, 0),
                                      dilation=(1, 1), groups=2, layout="NHWC",
                                      shape_rule="crop", activation="relu", out=out)
    assert y32 is out and y32.dtype == np.float32
    y_same = conv2d(xh, w, stride=1, padding="same", groups=2, layout="NHWC")
    y_valid = conv2d(xh, w, padding="valid", dilation=2, groups=2, layout="NHWC")
    print(f"conv2d: {y32.shape} (every keyword), 'same' {y_same.shape}, "
          f"'valid' dilation 2 {y_valid.shape}")

    # -- float64: the backward passes give float64 -------------------------------------
    x64: NDArray[np.float64] = rng.standard_normal((2, 3, 8, 8))
    w64: NDArray[np.float64] = rng.standard_normal((4, 3, 3, 3))
    y64: NDArray[np.float64] = conv2d(x64, w64, padding=1)
    grads = conv2d_backward(np.ones_like(y64), x64, w64, padding=1, bias=True)
    assert grads.bias is not None       # Optional: None when bias=False
    dx64: NDArray[np.float64] = convcore.conv2d_backward_input(np.ones_like(y64), w64,
                                                               x64.shape, padding=1)
    assert np.allclose(dx64, grads.input)
    print(f"conv2d_backward (float64): dx {grads.input.shape}, dw {grads.weight.shape}, "
          f"db {grads.bias.shape}")

    # -- the CS231n assignment's functions ---------------------------------------------
    conv_param = {"stride": 1, "pad": 1}
    outc, cache = conv_forward_fast(x64, w64, np.zeros(4), conv_param)
    dxc, dwc, dbc = conv_backward_fast(np.ones_like(outc), cache)
    assert dbc is not None and dxc.shape == x64.shape and dwc.shape == w64.shape
    print(f"cs231n.conv_forward_fast: out {outc.shape}; conv_backward_fast: db {dbc.shape}")

    # -- summary of a small ConvNet ------------------------------------------------------
    s = convcore.summary((1, 3, 32, 32), "16:3p1 32:4/2p1 pool2/2 10:4", layout="NCHW",
                         dtype="float32", shape_rule="strict", continue_as="crop")
    print(s)
    threads: int = convcore.get_num_threads()
    print(f"threads: {threads}")


if __name__ == "__main__":
    main()
