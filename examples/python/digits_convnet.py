"""Train a small ConvNet on scikit-learn's digits with convcore layers.

    pip install ".[docs]"          # or: pip install . scikit-learn
    python examples/python/digits_convnet.py

The network: two convcore.Conv2d layers with fused ReLU (8×8×1 → 8×8×16 → 4×4×32), then a
NumPy linear layer with a softmax over the 10 classes; plain minibatch SGD with momentum.
The data: the 1,797 8×8 grey-level digit images of ``sklearn.datasets.load_digits``, a
stratified 75/25 train/test split. It prints the loss and accuracies per epoch and exits
with status 1 when the test accuracy is below --min-accuracy (95 %), which is how CI runs
it. The documentation's tutorial page walks through this file.
"""
from __future__ import annotations

import argparse
import sys
import time
from typing import Dict, List, Tuple

import numpy as np
from numpy.typing import NDArray

import convcore

F32 = NDArray[np.float32]


# -- data ---------------------------------------------------------------------------------

def load_data(seed: int) -> Tuple[F32, NDArray[np.int64], F32, NDArray[np.int64]]:
    """The digits as NCHW float32 batches (N, 1, 8, 8), standardised with the training
    set's mean and deviation, split 75/25 with every class in proportion."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    images = digits.images.astype(np.float32)[:, None, :, :]     # (1797, 1, 8, 8)
    labels = digits.target.astype(np.int64)
    x_train, x_test, y_train, y_test = train_test_split(
        images, labels, test_size=0.25, stratify=labels, random_state=seed)
    mean, std = x_train.mean(), x_train.std()
    return (((x_train - mean) / std).astype(np.float32), y_train,
            ((x_test - mean) / std).astype(np.float32), y_test)


# -- the model ----------------------------------------------------------------------------

class ConvNet:
    """conv 3×3 (16, pad 1) + ReLU → conv 3×3 (32, stride 2, pad 1) + ReLU → linear → softmax.

    The convolutions are convcore layers: each keeps what its backward pass needs and
    accumulates its weight and bias gradients. The head is plain NumPy."""

    def __init__(self, seed: int) -> None:
        rng = np.random.default_rng(seed)
        # The first layer's input is data: no input gradient needed.
        self.conv1 = convcore.Conv2d(1, 16, 3, padding=1, activation="relu", init="he",
                                     rng=rng, requires_input_grad=False)
        # (8 − 3 + 2)/2 + 1 = 4.5: stride 2 does not divide, which convcore refuses by
        # default (ShapeError); "crop" takes the floor, 4, as PyTorch does.
        self.conv2 = convcore.Conv2d(16, 32, 3, stride=2, padding=1, activation="relu",
                                     shape_rule="crop", init="he", rng=rng)
        features = 32 * 4 * 4
        self.w = (rng.standard_normal((features, 10)) / np.sqrt(features)).astype(np.float32)
        self.b = np.zeros(10, np.float32)
        self.grad_w = np.zeros_like(self.w)
        self.grad_b = np.zeros_like(self.b)
        self._feat: F32 = np.empty((0, features), np.float32)

    def forward(self, x: F32) -> F32:
        """Class scores (logits), (N, 10)."""
        h = self.conv2.forward(self.conv1.forward(x))            # (N, 32, 4, 4)
        self._feat = h.reshape(len(x), -1)
        return self._feat @ self.w + self.b

    def backward(self, grad_logits: F32) -> None:
        """Gradients of every parameter from the gradient of the loss w.r.t. the logits."""
        self.grad_w = self._feat.T @ grad_logits
        self.grad_b = grad_logits.sum(axis=0)
        grad_feat = (grad_logits @ self.w.T).reshape(-1, 32, 4, 4)
        grad_h1 = self.conv2.backward(grad_feat)                 # masks its ReLU itself
        assert grad_h1 is not None
        self.conv1.backward(grad_h1)                             # returns None: no dx

    def zero_grad(self) -> None:
        self.conv1.zero_grad()
        self.conv2.zero_grad()

    def parameters(self) -> List[Tuple[str, F32, F32]]:
        """(name, array, gradient) of every parameter, the arrays updated in place."""
        params = [("head.w", self.w, self.grad_w), ("head.b", self.b, self.grad_b)]
        for layer_name, layer in (("conv1", self.conv1), ("conv2", self.conv2)):
            for name, p, g in layer.named_parameters():
                assert g is not None
                params.append((f"{layer_name}.{name}", p, g))
        return params


def softmax_cross_entropy(logits: F32, labels: NDArray[np.int64]) -> Tuple[float, F32]:
    """Mean cross-entropy of the softmax over the batch, and its gradient w.r.t. the
    logits."""
    z = logits - logits.max(axis=1, keepdims=True)
    p = np.exp(z)
    p /= p.sum(axis=1, keepdims=True)
    n = len(labels)
    loss = float(-np.log(p[np.arange(n), labels] + 1e-12).mean())
    grad = p
    grad[np.arange(n), labels] -= 1.0
    return loss, (grad / n).astype(np.float32)


def accuracy(model: ConvNet, x: F32, y: NDArray[np.int64], batch: int = 512) -> float:
    correct = 0
    for i in range(0, len(x), batch):
        correct += int((model.forward(x[i:i + batch]).argmax(axis=1) == y[i:i + batch]).sum())
    return correct / len(x)


# -- training -----------------------------------------------------------------------------

def train(epochs: int = 10, batch: int = 32, lr: float = 0.05, momentum: float = 0.9,
          seed: int = 0, verbose: bool = True) -> float:
    """Train with minibatch SGD + momentum; return the final test accuracy."""
    x_train, y_train, x_test, y_test = load_data(seed)
    model = ConvNet(seed)
    rng = np.random.default_rng(seed)
    velocity: Dict[str, F32] = {}
    start = time.perf_counter()
    for epoch in range(1, epochs + 1):
        order = rng.permutation(len(x_train))
        losses = []
        for i in range(0, len(order), batch):
            idx = order[i:i + batch]
            model.zero_grad()
            loss, grad = softmax_cross_entropy(model.forward(x_train[idx]), y_train[idx])
            model.backward(grad)
            for name, p, g in model.parameters():
                v = velocity.setdefault(name, np.zeros_like(p))
                v *= momentum
                v -= lr * g
                p += v               # in place: the conv layers see it at the next forward
            losses.append(loss)
        if verbose:
            print(f"epoch {epoch:2d}  loss {np.mean(losses):.4f}  "
                  f"train {accuracy(model, x_train, y_train):.4f}  "
                  f"test {accuracy(model, x_test, y_test):.4f}  "
                  f"({time.perf_counter() - start:.1f} s)")
    return accuracy(model, x_test, y_test)


def main(argv: List[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--min-accuracy", type=float, default=0.95,
                    help="exit with status 1 below this test accuracy (default 0.95)")
    args = ap.parse_args(argv)
    acc = train(epochs=args.epochs, seed=args.seed)
    print(f"test accuracy: {acc:.4f} ({round(acc * 450)} of 450 images)"
          f"  [convcore {convcore.__version__}, {convcore.show_config()['isa']}, "
          f"{convcore.get_num_threads()} threads]")
    if acc < args.min_accuracy:
        print(f"below the required {args.min_accuracy:.2f}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
