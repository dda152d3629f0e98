// pybind11 module convcore._core: converts, checks that buffers match the plan, releases
// the GIL and calls the C++ core. Argument policy (defaults, padding modes, messages that
// use the Python names) lives in python/convcore; this layer only refuses what would make
// the core read or write out of bounds.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <stdexcept>
#include <string>

#include "convcore/config.hpp"
#include "convcore/conv2d.hpp"
#include "convcore/gemm.hpp"

namespace py = pybind11;
using namespace convcore;

namespace {

enum class DType { F32, F64 };

DType dtype_of(const py::array& a, const char* name) {
  if (a.dtype().is(py::dtype::of<float>())) return DType::F32;
  if (a.dtype().is(py::dtype::of<double>())) return DType::F64;
  throw py::type_error(std::string(name) + " must be float32 or float64, got " +
                       std::string(py::str(a.dtype())));
}

void require_buffer(const py::array& a, const char* name, DType dt, int64_t size, bool writable) {
  if (dtype_of(a, name) != dt)
    throw py::type_error(std::string(name) + " must have the same dtype as the other arrays");
  if (!(a.flags() & py::array::c_style))
    throw std::invalid_argument(std::string(name) + " must be C-contiguous");
  if (a.size() != size)
    throw std::invalid_argument(std::string(name) + " has " + std::to_string(a.size()) +
                                " elements, expected " + std::to_string(size));
  if (writable && !a.writeable()) throw std::invalid_argument(std::string(name) + " is read-only");
  if (reinterpret_cast<uintptr_t>(a.data()) % a.itemsize() != 0)
    throw std::invalid_argument(std::string(name) + " is not aligned to its element size");
}

Layout parse_layout(const std::string& s) {
  if (s == "NCHW") return Layout::NCHW;
  if (s == "NHWC") return Layout::NHWC;
  throw std::invalid_argument("layout must be 'NCHW' or 'NHWC', got '" + s + "'");
}

ShapeRule parse_rule(const std::string& s) {
  if (s == "strict") return ShapeRule::Strict;
  if (s == "crop") return ShapeRule::Crop;
  if (s == "pad") return ShapeRule::Pad;
  throw std::invalid_argument("shape_rule must be 'strict', 'crop' or 'pad', got '" + s + "'");
}

template <typename T>
const T* ptr(const py::array& a) { return static_cast<const T*>(a.data()); }
template <typename T>
T* mptr(py::array& a) { return static_cast<T*>(a.mutable_data()); }

void forward(const Conv2dPlan& p, const py::array& x, const py::array& w,
             const py::object& bias, py::array& y, bool relu) {
  const DType dt = dtype_of(x, "x");
  require_buffer(x, "x", dt, p.x_size, false);
  require_buffer(w, "weight", dt, p.w_size, false);
  require_buffer(y, "out", dt, p.y_size, true);
  py::array b;
  if (!bias.is_none()) {
    b = bias.cast<py::array>();
    require_buffer(b, "bias", dt, p.K, false);
  }
  const bool has_bias = !bias.is_none();
  const Activation act = relu ? Activation::Relu : Activation::None;
  py::gil_scoped_release release;
  if (dt == DType::F32)
    conv2d_forward<float>(p, ptr<float>(x), ptr<float>(w), has_bias ? ptr<float>(b) : nullptr,
                          mptr<float>(y), act);
  else
    conv2d_forward<double>(p, ptr<double>(x), ptr<double>(w), has_bias ? ptr<double>(b) : nullptr,
                           mptr<double>(y), act);
}

void backward_data(const Conv2dPlan& p, const py::array& dy, const py::array& w, py::array& dx) {
  const DType dt = dtype_of(dy, "grad_output");
  require_buffer(dy, "grad_output", dt, p.y_size, false);
  require_buffer(w, "weight", dt, p.w_size, false);
  require_buffer(dx, "grad_input", dt, p.x_size, true);
  py::gil_scoped_release release;
  if (dt == DType::F32)
    conv2d_backward_data<float>(p, ptr<float>(dy), ptr<float>(w), mptr<float>(dx));
  else
    conv2d_backward_data<double>(p, ptr<double>(dy), ptr<double>(w), mptr<double>(dx));
}

void backward_weight(const Conv2dPlan& p, const py::array& dy, const py::array& x, py::array& dw) {
  const DType dt = dtype_of(dy, "grad_output");
  require_buffer(dy, "grad_output", dt, p.y_size, false);
  require_buffer(x, "x", dt, p.x_size, false);
  require_buffer(dw, "grad_weight", dt, p.w_size, true);
  py::gil_scoped_release release;
  if (dt == DType::F32)
    conv2d_backward_weight<float>(p, ptr<float>(dy), ptr<float>(x), mptr<float>(dw));
  else
    conv2d_backward_weight<double>(p, ptr<double>(dy), ptr<double>(x), mptr<double>(dw));
}

void backward_bias(const Conv2dPlan& p, const py::array& dy, py::array& db) {
  const DType dt = dtype_of(dy, "grad_output");
  require_buffer(dy, "grad_output", dt, p.y_size, false);
  require_buffer(db, "grad_bias", dt, p.K, true);
  py::gil_scoped_release release;
  if (dt == DType::F32)
    conv2d_backward_bias<float>(p, ptr<float>(dy), mptr<float>(db));
  else
    conv2d_backward_bias<double>(p, ptr<double>(dy), mptr<double>(db));
}

// Element strides of a 2-D array; throws when a byte stride is not a multiple of the
// element size (the Python layer copies such arrays first).
std::pair<int64_t, int64_t> element_strides(const py::array& a, const char* name) {
  const int64_t item = a.itemsize();
  const int64_t s0 = a.strides(0), s1 = a.strides(1);
  if (s0 % item != 0 || s1 % item != 0 || reinterpret_cast<uintptr_t>(a.data()) % item != 0)
    throw std::invalid_argument(std::string(name) + " has strides that are not whole elements");
  return {s0 / item, s1 / item};
}

void gemm_py(const py::array& a, const py::array& b, py::array& c, bool accumulate) {
  if (a.ndim() != 2 || b.ndim() != 2 || c.ndim() != 2)
    throw std::invalid_argument("gemm: a, b and out must be 2-D");
  const DType dt = dtype_of(a, "a");
  if (dtype_of(b, "b") != dt || dtype_of(c, "out") != dt)
    throw py::type_error("gemm: a, b and out must share one dtype");
  const int64_t m = a.shape(0), k = a.shape(1), n = b.shape(1);
  if (b.shape(0) != k) throw std::invalid_argument("gemm: inner dimensions differ");
  if (c.shape(0) != m || c.shape(1) != n) throw std::invalid_argument("gemm: out has the wrong shape");
  if (!(c.flags() & py::array::c_style) || !c.writeable())
    throw std::invalid_argument("gemm: out must be a writable C-contiguous array");
  const auto [rsa, csa] = element_strides(a, "a");
  const auto [rsb, csb] = element_strides(b, "b");
  const int64_t ldc = n;
  py::gil_scoped_release release;
  if (dt == DType::F32)
    gemm<float>(m, n, k, ptr<float>(a), rsa, csa, ptr<float>(b), rsb, csb, mptr<float>(c), ldc,
                accumulate);
  else
    gemm<double>(m, n, k, ptr<double>(a), rsa, csa, ptr<double>(b), rsb, csb, mptr<double>(c),
                 ldc, accumulate);
}

py::dict blocking_dict(const Blocking& b) {
  py::dict d;
  d["kernel"] = b.kernel_name;
  d["MR"] = b.mr;
  d["NR"] = b.nr;
  d["KC"] = b.kc;
  d["MC"] = b.mc;
  d["NC"] = b.nc;
  return d;
}

}  // namespace

PYBIND11_MODULE(_core, m) {
  m.doc() = "convcore C++ core (see the convcore package for the public API)";

  py::register_exception<ShapeError>(m, "ShapeError", PyExc_ValueError);
  // Sizes whose element counts overflow are reported like allocations that cannot succeed.
  py::register_exception_translator([](std::exception_ptr e) {
    try {
      if (e) std::rethrow_exception(e);
    } catch (const std::overflow_error& err) {
      py::set_error(PyExc_MemoryError, err.what());
    }
  });

  py::class_<Conv2dPlan>(m, "Plan", "A validated convolution problem (sizes resolved).")
      .def_readonly("N", &Conv2dPlan::N)
      .def_readonly("C", &Conv2dPlan::C)
      .def_readonly("H", &Conv2dPlan::H)
      .def_readonly("W", &Conv2dPlan::W)
      .def_readonly("K", &Conv2dPlan::K)
      .def_readonly("R", &Conv2dPlan::R)
      .def_readonly("S", &Conv2dPlan::S)
      .def_readonly("groups", &Conv2dPlan::G)
      .def_readonly("out_h", &Conv2dPlan::Ho)
      .def_readonly("out_w", &Conv2dPlan::Wo)
      .def_readonly("pad_top", &Conv2dPlan::pad_t)
      .def_readonly("pad_bottom", &Conv2dPlan::pad_b)
      .def_readonly("pad_left", &Conv2dPlan::pad_l)
      .def_readonly("pad_right", &Conv2dPlan::pad_r)
      .def_property_readonly("flops", &Conv2dPlan::flops)
      .def_property_readonly("algorithms", [](const Conv2dPlan& p) {
        const Conv2dAlgorithms a = conv2d_algorithms(p);
        py::dict d;
        d["forward"] = a.forward;
        d["backward_data"] = a.backward_data;
        d["backward_weight"] = a.backward_weight;
        return d;
      }, "The executor of each pass for this plan (see cpp/src/conv/algorithms.hpp).");

  m.def(
      "make_plan",
      [](int64_t batch, int64_t in_channels, int64_t in_h, int64_t in_w, int64_t out_channels,
         int64_t kernel_h, int64_t kernel_w, int64_t stride_h, int64_t stride_w, int64_t dilation_h,
         int64_t dilation_w, int64_t pad_top, int64_t pad_bottom, int64_t pad_left,
         int64_t pad_right, int64_t groups, const std::string& layout, const std::string& rule) {
        Conv2dParams prm;
        prm.batch = batch;
        prm.in_channels = in_channels;
        prm.in_h = in_h;
        prm.in_w = in_w;
        prm.out_channels = out_channels;
        prm.kernel_h = kernel_h;
        prm.kernel_w = kernel_w;
        prm.stride_h = stride_h;
        prm.stride_w = stride_w;
        prm.dilation_h = dilation_h;
        prm.dilation_w = dilation_w;
        prm.pad_top = pad_top;
        prm.pad_bottom = pad_bottom;
        prm.pad_left = pad_left;
        prm.pad_right = pad_right;
        prm.groups = groups;
        prm.layout = parse_layout(layout);
        prm.shape_rule = parse_rule(rule);
        return make_plan(prm);
      },
      py::arg("batch"), py::arg("in_channels"), py::arg("in_h"), py::arg("in_w"),
      py::arg("out_channels"), py::arg("kernel_h"), py::arg("kernel_w"), py::arg("stride_h"),
      py::arg("stride_w"), py::arg("dilation_h"), py::arg("dilation_w"), py::arg("pad_top"),
      py::arg("pad_bottom"), py::arg("pad_left"), py::arg("pad_right"), py::arg("groups"),
      py::arg("layout"), py::arg("shape_rule"));

  m.def("conv2d_forward", &forward, py::arg("plan"), py::arg("x"), py::arg("weight"),
        py::arg("bias"), py::arg("out"), py::arg("relu"));
  m.def("conv2d_backward_data", &backward_data, py::arg("plan"), py::arg("grad_output"),
        py::arg("weight"), py::arg("out"));
  m.def("conv2d_backward_weight", &backward_weight, py::arg("plan"), py::arg("grad_output"),
        py::arg("x"), py::arg("out"));
  m.def("conv2d_backward_bias", &backward_bias, py::arg("plan"), py::arg("grad_output"),
        py::arg("out"));
  m.def("gemm", &gemm_py, py::arg("a"), py::arg("b"), py::arg("out"), py::arg("accumulate") = false);

  m.def("set_num_threads", &set_num_threads, py::arg("n"));
  m.def("get_num_threads", &get_num_threads);
  m.def("get_isa", [] { return std::string(isa_name(active_isa())); });
  m.def("set_isa", [](const std::string& name) { set_active_isa(parse_isa(name)); }, py::arg("isa"));
  m.def("available_isas", [] {
    py::list out;
    for (Isa i : available_isas()) out.append(isa_name(i));
    return out;
  });
  m.def("config", [] {
    py::dict d;
    d["version"] = kVersion;
    d["isa"] = isa_name(active_isa());
    d["isa_detected"] = isa_name(detected_isa());
    py::list isas;
    for (Isa i : available_isas()) isas.append(isa_name(i));
    d["isa_available"] = isas;
    d["threads"] = get_num_threads();
    d["openmp"] = has_openmp();
    py::dict blk;
    blk["float32"] = blocking_dict(blocking<float>());
    blk["float64"] = blocking_dict(blocking<double>());
    d["blocking"] = blk;
    return d;
  });
}
