// pybind11 module convcore._core: converts, checks that buffers match the primitive,
// releases the GIL and calls the C++ core. Argument policy (defaults, padding modes, messages that
// use the Python names) lives in python/convcore; this layer only refuses what would make
// the core read or write out of bounds.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <optional>
#include <stdexcept>
#include <string>

#include "convcore/config.hpp"
#include "convcore/conv2d.hpp"
#include "convcore/gemm.hpp"
#include "convcore/interrupt.hpp"

#if defined(__unix__) || defined(__APPLE__)
#include <pthread.h>
#define CONVCORE_HAVE_FORK 1
#endif

namespace py = pybind11;
using namespace convcore;

namespace {

enum class DType { F32, F64 };

// Native byte order ('=' or '|', or the explicit marker of this machine's order).
bool native_order(char order) {
  const uint16_t probe = 1;
  const bool little = *reinterpret_cast<const unsigned char*>(&probe) == 1;
  return order == '=' || order == '|' || order == (little ? '<' : '>');
}

// Compared by value, not identity: arrays that went through pickle, dtypes with metadata
// or an explicit native byte order are still float32/float64.
DType dtype_of(const py::array& a, const char* name) {
  static const int f32 = py::dtype::of<float>().num(), f64 = py::dtype::of<double>().num();
  const py::dtype dt = a.dtype();
  if (native_order(dt.byteorder())) {
    if (dt.num() == f32) return DType::F32;
    if (dt.num() == f64) return DType::F64;
  }
  throw py::type_error(std::string(name) + " must be float32 or float64 (native byte order), got " +
                       std::string(py::str(dt)));
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
  // An empty array is never read or written: where its pointer points does not matter.
  if (size != 0 && reinterpret_cast<uintptr_t>(a.data()) % a.itemsize() != 0)
    throw std::invalid_argument(std::string(name) + " is not aligned to its element size");
}

// The data of an optional read-only operand (None: nullptr), checked as require_buffer
// checks. (Not through a default-constructed py::array: that allocates an empty array.)
const void* optional_buffer(const py::object& o, const char* name, DType dt, int64_t size) {
  if (o.is_none()) return nullptr;
  if (!py::isinstance<py::array>(o))
    throw py::type_error(std::string(name) + " must be a NumPy array or None");
  const auto a = py::reinterpret_borrow<py::array>(o);
  require_buffer(a, name, dt, size, false);
  return a.data();
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

DType dtype_of(const Conv2dPrimitive& prim) {
  return prim.desc().dtype == DataType::Float32 ? DType::F32 : DType::F64;
}

// Ctrl-C. Compute runs with the GIL released; on the main thread (the only one where
// Python runs signal handlers) the core polls python_signals() about every
// kPollMs milliseconds from that thread, which takes the GIL briefly and runs the pending
// handlers. When one raises (KeyboardInterrupt for SIGINT), every thread of the call
// stops at its next block boundary, the core throws convcore::Interrupted, and the call
// raises the handler's exception. Calls on other threads are not polled (Python would
// not run handlers there) and run to completion.
constexpr int kPollMs = 20;

bool python_signals(void*) {
  const PyGILState_STATE st = PyGILState_Ensure();
  const bool raised = PyErr_CheckSignals() != 0;
  PyGILState_Release(st);
  return raised;
}

// The main thread's ident, asked of Python once (and again in a child after fork(), whose
// main thread is the one that forked). Read and written with the GIL held.
unsigned long g_main_ident = 0;

bool on_main_thread() {
  if (g_main_ident == 0) {
#ifdef CONVCORE_HAVE_FORK
    static const bool registered = [] {
      pthread_atfork(nullptr, nullptr, [] { g_main_ident = 0; });
      return true;
    }();
    (void)registered;
#endif
    g_main_ident = py::module_::import("threading")
                       .attr("main_thread")()
                       .attr("ident")
                       .cast<unsigned long>();
  }
  return g_main_ident == PyThread_get_thread_ident();
}

// Runs body() with the GIL released and Ctrl-C polled (see above). A signal handler runs
// Python code in the middle of the call: if it calls convcore, that call is refused
// (it would share the running call's per-thread buffers).
template <typename Body>
void compute(Body&& body) {
  thread_local bool busy = false;
  if (busy)
    throw std::runtime_error("convcore cannot be called from a signal handler that runs "
                             "during a convcore call");
  struct Busy {
    bool& b;
    explicit Busy(bool& flag) : b(flag) { b = true; }
    ~Busy() { b = false; }
  } mark(busy);
  try {
    std::optional<InterruptPoll> poll;
    if (on_main_thread()) poll.emplace(&python_signals, nullptr, kPollMs);
    py::gil_scoped_release release;
    body();
  } catch (const Interrupted&) {
    if (!PyErr_Occurred()) PyErr_SetNone(PyExc_KeyboardInterrupt);
    throw py::error_already_set();
  }
  // A handler that raised at the last poll, after the last block: the result is complete
  // but the exception is still raised.
  if (PyErr_Occurred()) throw py::error_already_set();
}

// Dispatches body(T{}) on the primitive's dtype with the GIL released.
template <typename Body>
void with_dtype(DType dt, Body&& body) {
  compute([&] {
    if (dt == DType::F32) body(float{});
    else body(double{});
  });
}

void forward(const Conv2dPrimitive& prim, const py::array& x, const py::object& w,
             const py::object& bias, py::array& y, bool relu) {
  const Conv2dShape& sh = prim.shape();
  const DType dt = dtype_of(prim);
  require_buffer(x, "x", dt, sh.input_elements, false);
  const void* wp = optional_buffer(w, "weight", dt, sh.weight_elements);
  require_buffer(y, "out", dt, sh.output_elements, true);
  const void* bp = optional_buffer(bias, "bias", dt, sh.bias_elements);
  const Activation act = relu ? Activation::Relu : Activation::None;
  with_dtype(dt, [&](auto t) {
    using T = decltype(t);
    prim.forward<T>(ptr<T>(x), static_cast<const T*>(wp), static_cast<const T*>(bp), mptr<T>(y),
                    act);
  });
}

void backward_data(const Conv2dPrimitive& prim, const py::array& dy, const py::object& w,
                   py::array& dx) {
  const Conv2dShape& sh = prim.shape();
  const DType dt = dtype_of(prim);
  require_buffer(dy, "grad_output", dt, sh.output_elements, false);
  const void* wp = optional_buffer(w, "weight", dt, sh.weight_elements);
  require_buffer(dx, "grad_input", dt, sh.input_elements, true);
  with_dtype(dt, [&](auto t) {
    using T = decltype(t);
    prim.backward_data<T>(ptr<T>(dy), static_cast<const T*>(wp), mptr<T>(dx));
  });
}

void backward_weight(const Conv2dPrimitive& prim, const py::array& dy, const py::array& x,
                     py::array& dw) {
  const Conv2dShape& sh = prim.shape();
  const DType dt = dtype_of(prim);
  require_buffer(dy, "grad_output", dt, sh.output_elements, false);
  require_buffer(x, "x", dt, sh.input_elements, false);
  require_buffer(dw, "grad_weight", dt, sh.weight_elements, true);
  with_dtype(dt, [&](auto t) {
    using T = decltype(t);
    prim.backward_weight<T>(ptr<T>(dy), ptr<T>(x), mptr<T>(dw));
  });
}

void backward_bias(const Conv2dPrimitive& prim, const py::array& dy, py::array& db) {
  const Conv2dShape& sh = prim.shape();
  const DType dt = dtype_of(prim);
  require_buffer(dy, "grad_output", dt, sh.output_elements, false);
  require_buffer(db, "grad_bias", dt, sh.bias_elements, true);
  with_dtype(dt, [&](auto t) {
    using T = decltype(t);
    prim.backward_bias<T>(ptr<T>(dy), mptr<T>(db));
  });
}

void set_weights(Conv2dPrimitive& prim, const py::array& w) {
  const DType dt = dtype_of(prim);
  require_buffer(w, "weight", dt, prim.shape().weight_elements, false);
  with_dtype(dt, [&](auto t) {
    using T = decltype(t);
    prim.set_weights<T>(ptr<T>(w));
  });
}

const Pass kPasses[] = {Pass::Forward, Pass::BackwardData, Pass::BackwardWeight};

// Element strides of a 2-D array; throws when a byte stride is not a multiple of the
// element size (the Python layer copies such arrays first). An empty array is never read:
// its pointer and strides do not matter.
std::pair<int64_t, int64_t> element_strides(const py::array& a, const char* name) {
  if (a.size() == 0) return {1, 1};
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
  compute([&] {
    if (dt == DType::F32)
      gemm<float>(m, n, k, ptr<float>(a), rsa, csa, ptr<float>(b), rsb, csb, mptr<float>(c),
                  ldc, accumulate);
    else
      gemm<double>(m, n, k, ptr<double>(a), rsa, csa, ptr<double>(b), rsb, csb,
                   mptr<double>(c), ldc, accumulate);
  });
}

py::dict blocking_dict(const Blocking& b) {
  py::dict d;
  d["kernel"] = b.kernel_name;
  d["MR"] = b.mr;
  d["NR"] = b.nr;
  d["KC"] = b.kc;
  d["MC"] = b.mc;
  d["NC"] = b.nc;
  d["vector_bytes"] = b.vector_bytes;
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

  py::class_<Conv2dPrimitive>(m, "Primitive",
                              "A validated convolution with one implementation chosen per pass.")
      .def(py::init([](int64_t batch, int64_t in_channels, int64_t in_h, int64_t in_w,
                       int64_t out_channels, int64_t kernel_h, int64_t kernel_w, int64_t stride_h,
                       int64_t stride_w, int64_t dilation_h, int64_t dilation_w, int64_t pad_top,
                       int64_t pad_bottom, int64_t pad_left, int64_t pad_right, int64_t groups,
                       const std::string& layout, const std::string& rule,
                       const std::string& dtype, const std::string& forward,
                       const std::string& backward_data, const std::string& backward_weight,
                       const std::string& kind, int64_t output_padding_h,
                       int64_t output_padding_w, const std::string& algorithm) {
             Conv2dDesc desc;
             if (kind == "conv2d") desc.kind = OpKind::Conv2d;
             else if (kind == "locally_connected2d") desc.kind = OpKind::LocallyConnected2d;
             else if (kind == "conv_transpose2d") desc.kind = OpKind::ConvTranspose2d;
             else throw std::invalid_argument("kind must be 'conv2d', 'locally_connected2d' or "
                                              "'conv_transpose2d', got '" + kind + "'");
             Conv2dParams& prm = desc.params;
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
             prm.output_padding_h = output_padding_h;
             prm.output_padding_w = output_padding_w;
             prm.layout = parse_layout(layout);
             prm.shape_rule = parse_rule(rule);
             if (dtype == "float32") desc.dtype = DataType::Float32;
             else if (dtype == "float64") desc.dtype = DataType::Float64;
             else throw py::type_error("dtype must be 'float32' or 'float64', got '" + dtype + "'");
             if (algorithm == "exact") desc.algorithm = Algorithm::Exact;
             else if (algorithm == "winograd") desc.algorithm = Algorithm::Winograd;
             else throw std::invalid_argument("algorithm must be 'exact' or 'winograd', got '" +
                                              algorithm + "'");
             PrimitiveOptions opt;
             opt.forward = forward;
             opt.backward_data = backward_data;
             opt.backward_weight = backward_weight;
             return Conv2dPrimitive(desc, opt);
           }),
           py::arg("batch"), py::arg("in_channels"), py::arg("in_h"), py::arg("in_w"),
           py::arg("out_channels"), py::arg("kernel_h"), py::arg("kernel_w"), py::arg("stride_h"),
           py::arg("stride_w"), py::arg("dilation_h"), py::arg("dilation_w"), py::arg("pad_top"),
           py::arg("pad_bottom"), py::arg("pad_left"), py::arg("pad_right"), py::arg("groups"),
           py::arg("layout"), py::arg("shape_rule"), py::arg("dtype") = "float32",
           py::arg("forward") = "", py::arg("backward_data") = "",
           py::arg("backward_weight") = "", py::arg("kind") = "conv2d",
           py::arg("output_padding_h") = 0, py::arg("output_padding_w") = 0,
           py::arg("algorithm") = "exact")
      .def_property_readonly("out_h", [](const Conv2dPrimitive& p) { return p.shape().out_h; })
      .def_property_readonly("out_w", [](const Conv2dPrimitive& p) { return p.shape().out_w; })
      .def_property_readonly("pad_top", [](const Conv2dPrimitive& p) { return p.shape().pad_top; })
      .def_property_readonly("pad_bottom",
                             [](const Conv2dPrimitive& p) { return p.shape().pad_bottom; })
      .def_property_readonly("pad_left", [](const Conv2dPrimitive& p) { return p.shape().pad_left; })
      .def_property_readonly("pad_right",
                             [](const Conv2dPrimitive& p) { return p.shape().pad_right; })
      .def_property_readonly("flops", [](const Conv2dPrimitive& p) { return p.shape().flops; })
      .def_property_readonly("dtype", [](const Conv2dPrimitive& p) {
        return p.desc().dtype == DataType::Float32 ? "float32" : "float64";
      })
      .def_property_readonly("isa", [](const Conv2dPrimitive& p) { return isa_name(p.isa()); })
      .def_property_readonly("algorithm", [](const Conv2dPrimitive& p) {
        return algorithm_name(p.desc().algorithm);
      }, "The descriptor's algorithm: 'exact' or 'winograd' (forward only).")
      .def_property_readonly("algorithms", [](const Conv2dPrimitive& p) {
        py::dict d;
        for (Pass pass : kPasses) d[pass_name(pass)] = p.implementation(pass);
        return d;
      }, "The implementation each pass runs (chosen at creation).")
      .def("implementations", [](const Conv2dPrimitive& p) {
        py::dict d;
        for (Pass pass : kPasses) {
          py::list l;
          for (const ImplementationStatus& st : p.implementations(pass)) {
            py::dict e;
            e["name"] = st.name;
            e["applies"] = st.applies;
            e["preferred"] = st.preferred;
            e["reason"] = st.reason;
            l.append(e);
          }
          d[pass_name(pass)] = l;
        }
        return d;
      }, "Every entry of each pass's list, in preference order, judged for this problem.")
      .def("forward", &forward, py::arg("x"), py::arg("weight"), py::arg("bias"), py::arg("out"),
           py::arg("relu"))
      .def("backward_data", &backward_data, py::arg("grad_output"), py::arg("weight"),
           py::arg("out"))
      .def("backward_weight", &backward_weight, py::arg("grad_output"), py::arg("x"),
           py::arg("out"))
      .def("backward_bias", &backward_bias, py::arg("grad_output"), py::arg("out"))
      .def("set_weights", &set_weights, py::arg("weight"))
      .def("clear_weights", &Conv2dPrimitive::clear_weights)
      .def_property_readonly("has_weights", &Conv2dPrimitive::has_weights);

  m.def("gemm", &gemm_py, py::arg("a"), py::arg("b"), py::arg("out"), py::arg("accumulate") = false);

  m.def("set_num_threads", &set_num_threads, py::arg("n"));
  m.def("get_num_threads", &get_num_threads);
  m.def("max_num_threads", &max_num_threads);
  // The container's memory limit (config.hpp); the paths are parameters for tests' fake
  // trees.
  m.def("cgroup_memory_limit", [](int64_t host_swap, const std::string& proc_cgroup,
                                  const std::string& root) -> std::optional<int64_t> {
    const int64_t v = cgroup_memory_limit(host_swap, proc_cgroup.c_str(), root.c_str());
    if (v < 0) return std::nullopt;
    return v;
  }, py::arg("host_swap"), py::arg("proc_cgroup") = "/proc/self/cgroup",
     py::arg("root") = "/sys/fs/cgroup");
  // Where an array's data starts within its 4 KiB page (python/convcore/_args.py places
  // copies by it; cheaper than reading the address through ctypes).
  m.def("page_offset", [](const py::array& a) {
    return static_cast<int64_t>(reinterpret_cast<uintptr_t>(a.data()) & 4095);
  }, py::arg("a"));
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
