"""Conv2d: a convolutional layer object holding its parameters and gradients.

``_Layer`` is the private base class of the layers that train (Conv2d here,
LocallyConnected2d in locally_connected.py): gradient accumulation, ``zero_grad``,
``parameters`` / ``named_parameters``, ``state_dict`` / ``load_state_dict``,
``requires_input_grad``, and the primitive cache with prepacked weights and the in-place
weight-change detection. A subclass builds its primitive for an input shape
(``_new_problem``) and checks an output gradient (``_check_dy``)."""
from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping
from typing import Any, Dict, List, Optional, Tuple

import numpy as np

from . import _core
from ._args import (as_buffer, check_activation, check_algorithm, check_array, check_groups,
                    check_layout, check_shape_rule, is_int, new_array, pair, private_copy)
from ._conv import (_check_grad_output, _check_input, _dtype_name, _Problem, _FORCED,
                    conv2d_num_params)
from ._types import (Activation, Algorithm, DTypeLike, FloatArray, Init, IntPair, Layout,
                     Padding, RngLike, ShapeRule)

# Primitives a layer keeps, one per input shape (and ISA): enough for a training batch, a
# last partial batch and an evaluation batch.
_MAX_PRIMITIVES = 4


class LayerStateError(ValueError, RuntimeError):
    """A layer method was called in a state that does not allow it.

    Raised by ``backward()`` before any ``forward()`` of a :class:`Conv2d` or
    :class:`LocallyConnected2d`. A ValueError (and, for code written against earlier
    versions, a RuntimeError).

    Examples
    --------
    >>> import numpy as np
    >>> import convcore
    >>> layer = convcore.Conv2d(1, 1, 3)
    >>> try:
    ...     layer.backward(np.ones((1, 1, 2, 2), np.float32))
    ... except convcore.LayerStateError as e:
    ...     print(e)
    backward() called before forward(): the layer has no input to differentiate at
    """


def _rng(rng: Any) -> np.random.Generator:
    if rng is None:
        return np.random.default_rng()
    if is_int(rng):
        if rng < 0:
            raise ValueError(f"rng must be None, a non-negative int seed or a "
                             f"numpy.random.Generator, got {rng}")
        return np.random.default_rng(int(rng))
    if isinstance(rng, np.random.Generator):
        return rng
    raise TypeError(f"rng must be None, a non-negative int seed or a numpy.random.Generator, "
                    f"got {rng!r}")


_INITS = ("pytorch", "he")


def _check_dtype(dtype: Any) -> np.dtype[Any]:
    try:
        dt: np.dtype[Any] = np.dtype(dtype)
    except TypeError as e:
        raise TypeError(f"dtype must be 'float32' or 'float64', got {dtype!r}") from e
    if dt not in (np.float32, np.float64):
        raise TypeError(f"dtype must be 'float32' or 'float64', got {dtype!r}")
    return dt


def _check_requires_input_grad(requires_input_grad: Any) -> bool:
    if not isinstance(requires_input_grad, (bool, np.bool_)):
        raise TypeError(f"requires_input_grad must be True or False, got {requires_input_grad!r}")
    return bool(requires_input_grad)


def _check_init(init: Any) -> str:
    if not isinstance(init, str) or init not in _INITS:
        raise ValueError(f"init must be one of {', '.join(map(repr, _INITS))}, got {init!r}")
    return init


def _initial_params(gen: np.random.Generator, init: str, fan_in: int,
                    weight_shape: Tuple[int, ...], bias_shape: Optional[Tuple[int, ...]]
                    ) -> Tuple[FloatArray, Optional[FloatArray]]:
    """Initial weight and bias (None when bias_shape is None), in float64.

    ``"pytorch"``: both U(-1/sqrt(fan_in), 1/sqrt(fan_in)) (weights drawn first);
    ``"he"``: weights N(0, 2/fan_in), zero biases."""
    if init == "he":
        w0 = gen.normal(0.0, np.sqrt(2.0 / fan_in), size=weight_shape)
        b0 = np.zeros(bias_shape) if bias_shape is not None else None
    else:
        bound = 1.0 / np.sqrt(fan_in)
        w0 = gen.uniform(-bound, bound, size=weight_shape)
        b0 = gen.uniform(-bound, bound, size=bias_shape) if bias_shape is not None else None
    return w0, b0


class _Layer:
    """Private base of the layers that train (Conv2d, LocallyConnected2d).

    It holds the weight (prepacked into one cached primitive per input shape), the bias,
    the accumulated gradients and the last forward's input, and implements everything
    that does not depend on what the layer computes: the ``weight`` property,
    ``weight_changed``, ``named_parameters`` / ``parameters``, ``zero_grad``,
    ``state_dict`` / ``load_state_dict``, the weight-change detection of a training layer
    and the forward/backward passes through the cached primitive.

    A subclass calls ``_init_state`` from its constructor (after setting ``dtype`` and
    ``requires_input_grad``) and provides

    * ``_new_problem(x_shape)``: a new problem object (``.plan`` the core primitive,
      ``.y_shape``, ``.user_shape``) for that input shape and the weight's shape;
    * ``_checked_grad_output(grad_y, prob, x)``: grad_y checked against that problem's
      output shape, as a buffer the core can read;
    * optionally ``_check_forward_input(x)``: extra checks of a forward's input.
    """

    dtype: np.dtype[Any]
    requires_input_grad: bool

    def _init_state(self, weight: FloatArray, bias: Optional[FloatArray]) -> None:
        self._weight = as_buffer(weight.astype(self.dtype), "weight")
        self._weight_version = 0      # bumped whenever the primitives must repack
        self._weight_dirty = False    # weight_changed() / assignment since the last forward
        self._tracking = False        # training: forward() compares the weights with ...
        self._snapshot: Optional[FloatArray] = None  # ... this copy of what was packed
        self._primitives: "OrderedDict[Tuple[Any, ...], Tuple[Any, int]]" = OrderedDict()
        self.bias = bias.astype(self.dtype) if bias is not None else None
        self.grad_weight: Optional[FloatArray] = None
        self.grad_bias: Optional[FloatArray] = None
        self._x: Optional[FloatArray] = None      # the layer's copy of the last input
        # The weights the last forward passed through its problem's band (see _band_of),
        # or None when it ran the prepacked primitive; backward follows the same path.
        self._band_weight: Optional[FloatArray] = None

    # -- parameters ---------------------------------------------------------------------

    @property
    def weight(self) -> FloatArray:
        """The weight array.

        Assigning it (same shape and dtype, else ValueError) makes the next forward
        repack; the layer then uses the assigned array itself (copied only when it is not
        C-contiguous and aligned)."""
        return self._weight

    @weight.setter
    def weight(self, value: FloatArray) -> None:
        self._set_weight(value)

    def _set_weight(self, value: FloatArray) -> None:
        value = check_array(value, "weight")
        if value.shape != self._weight.shape or value.dtype != self.dtype:
            raise ValueError(f"weight must have shape {self._weight.shape} and dtype "
                             f"{self.dtype}, got {value.shape} {value.dtype}")
        self._weight = as_buffer(value, "weight")
        self.weight_changed()

    def weight_changed(self) -> None:
        """Tell the layer that its weight array was edited in place.

        The next ``forward()`` repacks the weights. Assigning ``layer.weight`` and ``load_state_dict()`` do this themselves, and a
        training layer (see the class notes) notices in-place edits by itself; calling it
        needlessly costs one repack."""
        self._weight_dirty = True

    def named_parameters(self) -> List[Tuple[str, FloatArray, Optional[FloatArray]]]:
        """The learnable parameters as ``(name, array, gradient)`` triples.

        Returns
        -------
        list of (str, numpy.ndarray, numpy.ndarray or None)
            ``("weight", weight, grad_weight)`` and, with a bias, ``("bias", bias,
            grad_bias)``. The arrays are the layer's own (not copies): update them in
            place. A gradient is None until the first ``backward()`` after construction
            or ``zero_grad()``.

        Notes
        -----
        Calling it puts the layer in training mode: from then on every ``forward()``
        checks the weights for in-place edits (see the class notes).
        """
        self._start_tracking()
        out = [("weight", self._weight, self.grad_weight)]
        if self.bias is not None:
            out.append(("bias", self.bias, self.grad_bias))
        return out

    def parameters(self) -> List[Tuple[FloatArray, Optional[FloatArray]]]:
        """The learnable parameters as ``(array, gradient)`` pairs, for an optimiser.

        Returns
        -------
        list of (numpy.ndarray, numpy.ndarray or None)
            ``(weight, grad_weight)`` and, with a bias, ``(bias, grad_bias)``: the layer's
            own arrays, to be updated in place (``p -= lr * g``, ``np.subtract(p, u,
            out=p)``, ...). The next ``forward()`` notices the change and repacks. A
            gradient is None until the first ``backward()`` after construction or
            ``zero_grad()``; skip such pairs, as PyTorch's optimisers do.

        Notes
        -----
        The gradients are read when this is called: call it after ``backward()`` (a list
        kept from before the first ``backward()`` holds None gradients, and ``zero_grad()``
        replaces the gradient arrays).
        """
        return [(p, g) for _, p, g in self.named_parameters()]

    def zero_grad(self, set_to_none: bool = True) -> None:
        """Reset the accumulated gradients.

        Parameters
        ----------
        set_to_none : bool, default True
            True (PyTorch's default): ``grad_weight`` and ``grad_bias`` become None and
            the next ``backward()`` stores fresh arrays. False: the existing gradient
            arrays are filled with zeros in place.
        """
        if set_to_none:
            self.grad_weight = None
            self.grad_bias = None
            return
        for g in (self.grad_weight, self.grad_bias):
            if g is not None:
                g.fill(0)

    def state_dict(self) -> "OrderedDict[str, FloatArray]":
        """The parameters by name, as copies: ``{"weight": ..., "bias": ...}``.

        Returns
        -------
        collections.OrderedDict
            ``"weight"`` and, for a layer with a bias, ``"bias"`` (PyTorch's names).
            Copies: training the layer afterwards does not change a saved state.
        """
        d: "OrderedDict[str, FloatArray]" = OrderedDict(weight=self._weight.copy())
        if self.bias is not None:
            d["bias"] = self.bias.copy()
        return d

    def load_state_dict(self, state_dict: Mapping[str, FloatArray]) -> None:
        """Copy parameters from a mapping made by ``state_dict()`` (or by hand).

        Parameters
        ----------
        state_dict : mapping
            Exactly the keys ``state_dict()`` returns: ``"weight"`` and, for a layer with
            a bias, ``"bias"``; each a numpy.ndarray with this layer's shape and dtype.

        Raises
        ------
        TypeError
            ``state_dict`` is not a mapping, a value is not a numpy.ndarray, or its dtype
            is not the layer's (no silent casts).
        KeyError
            A key is missing or unexpected (the message names it).
        ValueError
            A value has the wrong shape (the message names the key and both shapes).

        Notes
        -----
        Everything is checked before anything is changed. The values are copied, the
        weights are repacked at the next ``forward()``; gradients are left as they are.
        """
        if not isinstance(state_dict, Mapping):
            raise TypeError(f"load_state_dict: state_dict must be a mapping (e.g. from "
                            f"state_dict()), got {type(state_dict).__name__}")
        expected = {"weight": self._weight}
        if self.bias is not None:
            expected["bias"] = self.bias
        missing = [k for k in expected if k not in state_dict]
        unexpected = [k for k in state_dict if k not in expected]
        if missing or unexpected:
            parts = []
            if missing:
                parts.append("missing key(s) " + ", ".join(map(repr, missing)))
            if unexpected:
                parts.append("unexpected key(s) " + ", ".join(map(repr, unexpected)))
            hint = " (this layer has no bias)" if "bias" in unexpected else ""
            raise KeyError(f"load_state_dict: {' and '.join(parts)}; expected "
                           f"{', '.join(map(repr, expected))}{hint}")
        new = {}
        for key, cur in expected.items():
            v = state_dict[key]
            if not isinstance(v, np.ndarray):
                raise TypeError(f"load_state_dict: {key!r} must be a numpy.ndarray, "
                                f"got {type(v).__name__}")
            if v.dtype != self.dtype:
                raise TypeError(f"load_state_dict: {key!r} has dtype {v.dtype}, but this "
                                f"layer is {self.dtype} (convert it with .astype first)")
            if v.shape != cur.shape:
                raise ValueError(f"load_state_dict: {key!r} has shape {v.shape}, expected "
                                 f"{cur.shape}")
            new[key] = np.array(v, dtype=self.dtype, order="C", copy=True)
        self._weight = as_buffer(new["weight"], "weight")
        if "bias" in new:
            self.bias = new["bias"]
        self.weight_changed()

    # -- prepacked weights --------------------------------------------------------------

    def _start_tracking(self) -> None:
        if not self._tracking:
            self._tracking = True
            self._snapshot = None   # the next forward takes one (and repacks once)

    def _sync_weights(self) -> None:
        """Before a forward: bump the version when the weights changed since the last
        pack (signalled, or, when training, found by comparing with the snapshot)."""
        changed = self._weight_dirty
        if self._tracking:
            snap = self._snapshot
            w = self._weight
            if changed or snap is None or not _same_bits(snap, w):
                self._snapshot = private_copy(w, "the weights' snapshot")
                changed = True
        if changed:
            self._weight_version += 1
            self._weight_dirty = False

    def _primitive(self, x_shape: Tuple[int, ...], sync: bool = True) -> Any:
        """The primitive for this input shape with the current weights prepacked.
        ``sync=False`` (backward) keeps what the last forward packed."""
        if sync:
            self._sync_weights()
        key = (x_shape, _core.get_isa(), tuple(sorted(_FORCED.items())) if _FORCED else ())
        entry = self._primitives.get(key)
        if entry is None:
            prob = self._new_problem(x_shape)
            version = -1
            if len(self._primitives) >= _MAX_PRIMITIVES:
                self._primitives.popitem(last=False)
        else:
            prob, version = entry
            self._primitives.move_to_end(key)
        if version != self._weight_version:
            prob.plan.set_weights(self._packing_source())
        self._primitives[key] = (prob, self._weight_version)
        return prob

    def _packing_source(self) -> FloatArray:
        # What the last sync saw: the snapshot when training (the weight array may have
        # been edited since, e.g. between forward and backward), else the array itself.
        return self._snapshot if self._tracking and self._snapshot is not None else self._weight

    def _new_problem(self, x_shape: Tuple[int, ...]) -> Any:
        raise NotImplementedError

    def _checked_grad_output(self, grad_y: FloatArray, prob: Any, x: FloatArray) -> FloatArray:
        raise NotImplementedError

    def _check_forward_input(self, x: FloatArray) -> None:
        """Checks of a forward's input beyond its dtype (none by default)."""

    def _band_of(self, prob: Any) -> Any:
        """The problem's band of outputs that reach the input (``_Problem.band``), for
        layers whose problem has one; None by default."""
        return None

    # -- passes -------------------------------------------------------------------------

    def _forward(self, x: FloatArray, relu: bool = False) -> FloatArray:
        """The forward pass through the cached primitive (bias and ReLU fused); keeps the
        layer's own copy of x for ``backward``."""
        x = _check_input(x, "x")
        if x.dtype != self.dtype:
            raise TypeError(f"x has dtype {x.dtype} but this layer is {self.dtype}")
        self._check_forward_input(x)
        prob = self._primitive(x.shape)
        y = new_array(prob.user_shape(prob.y_shape), self.dtype, "the output")
        bias = as_buffer(self.bias, "bias") if self.bias is not None else None
        # The layer's own copy (C-contiguous and aligned: also the buffer the core reads),
        # so later in-place edits of x cannot change the gradients.
        xc = private_copy(x, "the layer's copy of x")
        xc.flags.writeable = False
        # Most outputs wholly in the padding: the band, with the weights just packed.
        w_band = self._packing_source() if self._band_of(prob) is not None else None
        if w_band is None or not prob.forward_by_band(xc, w_band, bias, y, relu):
            w_band = None
            prob.plan.forward(xc, None, bias, y, relu)
        self._x, self._band_weight = xc, w_band
        return y

    def _saved_input(self) -> FloatArray:
        if self._x is None:
            raise LayerStateError("backward() called before forward(): the layer has no "
                                  "input to differentiate at")
        return self._x

    def _backward(self, grad_y: FloatArray) -> Optional[FloatArray]:
        """The backward passes for the last forward: dx (unless ``requires_input_grad``
        is False) with that forward's packed weights; the weight and bias gradients
        accumulated into ``grad_weight`` / ``grad_bias``."""
        x = self._saved_input()
        prob = self._primitive(x.shape, sync=False)  # the forward's weights, for dx
        dy = self._checked_grad_output(grad_y, prob, x)
        # dx and dw: the prepacked primitive, or the band when the forward took it.
        plan, dy_in, w_in = prob.plan, dy, None
        if self._band_weight is not None:
            sub, dy_band = prob.crop_grad_output(dy)
            plan, dy_in, w_in = sub.plan, as_buffer(dy_band, "grad_output"), self._band_weight
        dx = None
        if self.requires_input_grad:
            dx = new_array(x.shape, self.dtype, "grad_input")
            plan.backward_data(dy_in, w_in, dx)
        dw = new_array(self._weight.shape, self.dtype, "grad_weight")
        plan.backward_weight(dy_in, x, dw)
        db = None
        if self.bias is not None:
            db = new_array(self.bias.shape, self.dtype, "grad_bias")
            prob.plan.backward_bias(dy, db)
        self.grad_weight = _accumulate(self.grad_weight, dw)
        self.grad_bias = _accumulate(self.grad_bias, db)
        self._start_tracking()
        return dx


class Conv2d(_Layer):
    """A convolutional layer that trains, with its weights prepacked for repeated calls.

    K filters of R×S×(C/groups) weights, shared over every output position, plus one bias
    each. ``forward(x)`` keeps what ``backward`` needs; ``backward(grad_y)`` returns the input
    gradient and *adds* the weight and bias gradients (summed over every position and
    image) to ``grad_weight`` and ``grad_bias``, as PyTorch does.

    Parameters
    ----------
    in_channels, out_channels : int
        C and K.
    kernel_size, stride, padding, dilation : int or pair
        As for :func:`convcore.conv2d` (``padding`` may also be ``"same"`` / ``"valid"``).
    groups : int, default 1
        C and K must both be multiples of it.
    bias : bool, default True
        Whether the layer has a bias (``bias`` is None otherwise).
    layout : {"NCHW", "NHWC"}, default "NCHW"
        Input/output layout; the weight is (K, C/groups, R, S) in NCHW and
        (K, R, S, C/groups) in NHWC.
    shape_rule : {"strict", "crop", "pad"}, default "strict"
        What to do when the stride does not fit (see :func:`convcore.conv2d`).
    activation : {None, "relu"}, default None
        ReLU fused into the forward pass (and its mask applied in ``backward``).
    dtype : {"float32", "float64"}, default "float32"
    rng : None, int or numpy.random.Generator, default None
        Source of the initial weights (an int is a seed; None draws fresh entropy).
    requires_input_grad : bool, default True
        False skips the input gradient: ``backward`` then returns None and computes only
        the parameter gradients (the first layer of a network, whose input is data).
    init : {"pytorch", "he"}, default "pytorch"
        ``"pytorch"``: weights and biases U(-1/sqrt(fan_in), 1/sqrt(fan_in)), PyTorch's
        default for its Conv2d. ``"he"``: He (Kaiming) normal weights, N(0, 2/fan_in),
        suited to ReLU networks, and zero biases. fan_in = (C/groups)·R·S.
    algorithm : {None, "winograd"}, default None
        The forward pass's algorithm, as for :func:`convcore.conv2d`: None is exact;
        ``"winograd"`` computes 3×3, stride-1, dilation-1 layers by Winograd F(4×4, 3×3)
        (weights transformed once, when packed; float32 error about 1e-5 of the largest
        output). ``backward`` is exact either way. ValueError at construction for a layer
        Winograd cannot compute.

    Attributes
    ----------
    weight, bias : numpy.ndarray
        The parameters (``bias`` is None without a bias).
    grad_weight, grad_bias : numpy.ndarray or None
        Accumulated gradients. None after construction and after ``zero_grad()``; the
        first ``backward`` then stores its gradients, each later one adds to them (in
        place) until the next ``zero_grad()``.
    num_params : int
        Number of learnable parameters.

    Raises
    ------
    TypeError
        A size or flag of the wrong type (``in_channels=3.0``, ``bias="yes"``), a dtype
        other than float32/float64, or an ``rng`` that is not None, an int or a Generator.
    ValueError
        A size < 1, groups that do not divide C and K, an unknown layout, shape_rule,
        activation or init, or a padding that can never work (``"same"`` with stride > 1).

    See Also
    --------
    conv2d : The same convolution as a function.
    LocallyConnected2d : The layer without parameter sharing.

    Notes
    -----
    Every hyperparameter is checked by the constructor (TypeError / ValueError naming it),
    not at the first forward.

    ``forward(x)`` keeps its own copy of x (and, with activation="relu", of where the
    output was positive), so editing x or the returned y in place afterwards does not
    change the gradients ``backward()`` computes: gradients always belong to the forward
    they follow. The input gradient is computed with the weights that forward used, even
    when the weights were changed in between. ``backward()`` before any ``forward()``
    raises LayerStateError (a ValueError).

    **Prepacked weights and optimisers.** The layer keeps a validated primitive per input
    shape with its weights prepacked, so a call pays for neither planning nor packing
    twice. NumPy cannot tell the layer that an array was written to, so the layer looks:

    * Once the layer is *training* — ``backward()`` or ``parameters()`` /
      ``named_parameters()`` has been called — every ``forward()`` compares the weight
      array with the copy it last packed (one pass over the weights, small beside the
      three convolutions of a training step) and repacks when they differ. An optimiser
      may therefore update the arrays from ``parameters()`` in place, any way it likes::

          for p, g in layer.parameters():
              p -= lr * g          # in place; the next forward() sees it

    * A layer used only for inference skips that comparison. There, ``layer.weight = w``
      and ``layer.weight -= lr * g`` (augmented assignment to an attribute assigns back)
      and ``load_state_dict()`` repack by themselves; after any other in-place edit
      (``layer.weight[...] = v``, ``np.copyto(layer.weight, v)``) call
      ``layer.weight_changed()``.

    The bias is read at every call, never prepacked: in-place edits to it always count.

    Examples
    --------
    >>> import numpy as np
    >>> import convcore
    >>> layer = convcore.Conv2d(3, 8, 3, padding=1, activation="relu", rng=0)
    >>> layer.weight.shape, layer.num_params
    ((8, 3, 3, 3), 224)
    >>> x = np.ones((2, 3, 8, 8), np.float32)
    >>> for step in range(3):
    ...     layer.zero_grad()
    ...     y = layer.forward(x)
    ...     _ = layer.backward(y - 1.0)       # grad of 0.5·|y - 1|²
    ...     for p, g in layer.parameters():
    ...         p -= 0.01 * g
    >>> y.shape, layer.grad_weight.shape
    ((2, 8, 8, 8), (8, 3, 3, 3))
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: IntPair,
                 stride: IntPair = 1, padding: Padding = 0, dilation: IntPair = 1,
                 groups: int = 1, bias: bool = True, layout: Layout = "NCHW",
                 shape_rule: ShapeRule = "strict", activation: Activation = None,
                 dtype: DTypeLike = "float32", rng: RngLike = None,
                 requires_input_grad: bool = True, init: Init = "pytorch",
                 algorithm: Algorithm = None) -> None:
        self.num_params = conv2d_num_params(in_channels, out_channels, kernel_size,
                                            groups=groups, bias=bias)  # checks them all
        self.in_channels = int(in_channels)
        self.out_channels = int(out_channels)
        self.kernel_size = pair(kernel_size, "kernel_size", 1)
        self.stride = pair(stride, "stride", 1)
        self.dilation = pair(dilation, "dilation", 1)
        self.padding = padding
        self.groups = check_groups(groups)
        self.layout = check_layout(layout)
        self.shape_rule = check_shape_rule(shape_rule)
        self.activation = check_activation(activation)
        self.algorithm = check_algorithm(algorithm)
        self.dtype = _check_dtype(dtype)
        self.requires_input_grad = _check_requires_input_grad(requires_input_grad)
        self.init = _check_init(init)
        r, s = self.kernel_size
        cg = self.in_channels // self.groups
        k = self.out_channels
        shape = (k, cg, r, s) if layout == "NCHW" else (k, r, s, cg)
        w0, b0 = _initial_params(_rng(rng), init, cg * r * s, shape, (k,) if bias else None)
        self._init_state(w0, b0)
        self._mask: Optional[np.ndarray] = None   # relu: where that forward's output was > 0
        # Fails early (ValueError) for a padding string or tuple that can never work.
        _Problem((1, self.in_channels, r * self.dilation[0], s * self.dilation[1])
                 if layout == "NCHW" else (1, r * self.dilation[0], s * self.dilation[1], self.in_channels),
                 shape, self.stride, padding, self.dilation, self.groups, layout, "crop",
                 algorithm=self.algorithm)

    @property
    def weight(self) -> FloatArray:
        """The filters: (K, C/groups, R, S) in NCHW, (K, R, S, C/groups) in NHWC.

        Assigning it (same shape and dtype, else ValueError) makes the next forward
        repack; the layer then uses the assigned array itself (copied only when it is not
        C-contiguous and aligned)."""
        return self._weight

    @weight.setter
    def weight(self, value: FloatArray) -> None:
        self._set_weight(value)

    def _new_problem(self, x_shape: Tuple[int, ...]) -> _Problem:
        return _Problem(x_shape, self._weight.shape, self.stride, self.padding,
                        self.dilation, self.groups, self.layout, self.shape_rule,
                        _dtype_name(self._weight), self.algorithm)

    def _checked_grad_output(self, grad_y: FloatArray, prob: _Problem, x: FloatArray) -> FloatArray:
        return as_buffer(_check_grad_output(grad_y, prob, x, "x"), "grad_output")

    def _band_of(self, prob: _Problem) -> Any:
        return prob.band()

    # -- passes -------------------------------------------------------------------------

    def _kw(self) -> Dict[str, Any]:
        return dict(stride=self.stride, padding=self.padding, dilation=self.dilation,
                    groups=self.groups, layout=self.layout, shape_rule=self.shape_rule)

    def output_shape(self, input_shape: Any) -> Tuple[int, ...]:
        """The shape ``forward`` returns for an input of a given shape.

        Parameters
        ----------
        input_shape : sequence of int
            (N, C, H, W) in NCHW or (N, H, W, C) in NHWC (3-D for one image).

        Returns
        -------
        tuple of int
            (N, K, Ho, Wo) in NCHW or (N, Ho, Wo, K) in NHWC.

        Raises
        ------
        ShapeError
            The stride does not fit under this layer's shape rule, or the filter is
            larger than the padded input.
        ValueError
            input_shape is malformed or has the wrong number of channels.
        """
        from ._conv import conv2d_output_shape
        return conv2d_output_shape(input_shape, self.weight.shape, **self._kw())

    def forward(self, x: FloatArray) -> FloatArray:
        """Convolve a batch (bias and activation fused) and keep what ``backward`` needs.

        Parameters
        ----------
        x : numpy.ndarray
            (N, C, H, W) in NCHW or (N, H, W, C) in NHWC, of the layer's dtype (TypeError
            otherwise). Copied: later edits to ``x`` do not affect ``backward``.

        Returns
        -------
        numpy.ndarray
            The output, (N, K, Ho, Wo) in NCHW or (N, Ho, Wo, K) in NHWC, in the layer's
            dtype (ReLU applied when the layer has ``activation="relu"``).

        Raises
        ------
        TypeError
            x is not a float array of the layer's dtype.
        ValueError
            x does not have 3 or 4 axes or the layer's number of channels.
        ShapeError
            The stride does not fit x under the layer's shape rule.
        """
        y = self._forward(x, self.activation == "relu")
        self._mask = np.greater(y, 0) if self.activation == "relu" else None
        return y

    __call__ = forward

    def backward(self, grad_y: FloatArray) -> Optional[FloatArray]:
        """Gradients for the last ``forward()``.

        Parameters
        ----------
        grad_y : numpy.ndarray
            Gradient of the loss with respect to that forward's output (its shape, the
            layer's dtype).

        Returns
        -------
        numpy.ndarray or None
            The gradient with respect to that forward's input, computed with the weights
            that forward used; None when ``requires_input_grad`` is False (not computed).

        Raises
        ------
        LayerStateError
            ``forward()`` was never called.
        TypeError
            grad_y is not a float array of the layer's dtype.
        ValueError
            grad_y does not have the shape of the last forward's output.

        Notes
        -----
        Adds the weight and bias gradients to ``grad_weight`` / ``grad_bias`` (the first
        ``backward()`` after construction or ``zero_grad()`` stores them).
        """
        self._saved_input()
        grad_y = check_array(grad_y, "grad_y")
        if self.activation == "relu":
            assert self._mask is not None
            if grad_y.shape != self._mask.shape:
                raise ValueError(f"grad_y has shape {grad_y.shape}, expected {self._mask.shape}")
            grad_y = np.where(self._mask, grad_y, np.zeros((), dtype=grad_y.dtype))
        return self._backward(grad_y)

    def __repr__(self) -> str:
        return (f"Conv2d({self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
                f"stride={self.stride}, padding={self.padding!r}, dilation={self.dilation}, "
                f"groups={self.groups}, bias={self.bias is not None}, layout={self.layout!r}, "
                f"activation={self.activation!r}, dtype={self.dtype.name}"
                + ("" if self.requires_input_grad else ", requires_input_grad=False")
                + ("" if self.init == "pytorch" else f", init={self.init!r}")
                + ("" if self.algorithm is None else f", algorithm={self.algorithm!r}") + ")")


def _same_bits(a: FloatArray, b: FloatArray) -> bool:
    """Bitwise equality of two C-contiguous arrays of one dtype (NaN equals itself, -0.0
    differs from 0.0, so a NaN weight never makes the layer repack at every call). Compared
    as 64-bit words where the size allows: about as fast as a copy."""
    if (a.shape != b.shape or a.dtype != b.dtype
            or not (a.flags.c_contiguous and b.flags.c_contiguous)):
        return False  # (never for the layer's arrays; False only costs a repack)
    if a.nbytes <= _BYTES_COMPARED_AS_BYTES:   # (np.array_equal's fixed cost: ~8 µs)
        return a.tobytes() == b.tobytes()
    word = np.uint64 if a.nbytes % 8 == 0 else np.uint32
    return bool(np.array_equal(a.reshape(-1).view(word), b.reshape(-1).view(word)))


# Weights up to this size are compared as two byte strings (copies, cheap at this size).
_BYTES_COMPARED_AS_BYTES = 1 << 14


def _accumulate(acc: Optional[FloatArray], g: Optional[FloatArray]) -> Optional[FloatArray]:
    """acc + g into acc (in place, as PyTorch's .grad), or g when there is nothing yet."""
    if g is None:
        return acc
    if acc is None or acc.shape != g.shape or acc.dtype != g.dtype or not acc.flags.writeable:
        return g if acc is None else acc + g
    np.add(acc, g, out=acc)
    return acc
