// Conv2dPrimitive: validates a descriptor once, takes the ISA engine, picks one
// implementation per pass from the ordered lists (implementation.hpp) and runs exactly
// that one. Weights are packed per call into the calling thread's scratch, or once by
// set_weights into buffers the primitive owns.
#include <cstdlib>
#include <cstring>
#include <new>
#include <stdexcept>
#include <string>

#include "convcore/conv2d.hpp"
#include "exact_padding.hpp"
#include "implementation.hpp"
#include "plan.hpp"
#include "winograd.hpp"

namespace convcore {

const char* algorithm_name(Algorithm algorithm) {
  return algorithm == Algorithm::Winograd ? "winograd" : "exact";
}

const char* pass_name(Pass pass) {
  switch (pass) {
    case Pass::Forward: return "forward";
    case Pass::BackwardData: return "backward_data";
    default: return "backward_weight";
  }
}

namespace {

constexpr int kPasses = 3;

// A 64-byte aligned buffer owned by a primitive (its prepacked weights).
struct AlignedBuffer {
  void* ptr = nullptr;
  AlignedBuffer() = default;
  AlignedBuffer(std::size_t bytes, const char* what) {
    ptr = std::aligned_alloc(64, (bytes + 63) / 64 * 64);
    if (!ptr)
      throw detail::ScratchAllocError(std::string("cannot allocate ") + std::to_string(bytes) +
                                      " bytes for " + what);
  }
  AlignedBuffer(AlignedBuffer&& o) noexcept : ptr(o.ptr) { o.ptr = nullptr; }
  AlignedBuffer& operator=(AlignedBuffer&& o) noexcept {
    std::swap(ptr, o.ptr);
    return *this;
  }
  ~AlignedBuffer() { std::free(ptr); }
};

// Every list entry's name, dtype-independent (the lists are the same for both dtypes).
const char* entry_name(OpKind kind, Pass pass, std::size_t i) {
  return detail::implementations<float>(kind, pass)[i].name;
}

template <typename T>
std::size_t choose(Pass pass, const detail::ConvPlan& plan, const Blocking& bl,
                   const std::string& forced) {
  const auto& list = detail::implementations<T>(plan.kind, pass);
  if (!forced.empty()) {
    std::string names;
    for (std::size_t i = 0; i < list.size(); ++i) {
      if (forced != list[i].name) {
        names += (names.empty() ? "'" : ", '") + std::string(list[i].name) + "'";
        continue;
      }
      if (const char* why = list[i].why_not(plan, bl))
        throw std::invalid_argument(std::string(pass_name(pass)) + " implementation '" + forced +
                                    "' does not apply to this problem: " + why);
      return i;
    }
    throw std::invalid_argument(std::string(pass_name(pass)) + " implementation '" + forced +
                                "' does not exist; the list is " + names);
  }
  for (std::size_t i = 0; i < list.size(); ++i)
    if (!list[i].why_not(plan, bl) && !list[i].declines(plan, bl)) return i;
  // Each list ends, per layout, with an entry that applies to every problem and never
  // declines (the path tests check it).
  throw std::logic_error(std::string("no ") + pass_name(pass) + " implementation applies");
}

// The transposed convolution's own view of its plan (that of the equivalent convolution):
// its input is the plan's y, its output the plan's x.
Conv2dShape transposed_shape_of(const detail::ConvPlan& p) {
  Conv2dShape s;
  s.out_h = p.H;
  s.out_w = p.W;
  s.pad_top = p.p.pad_top;
  s.pad_bottom = p.p.pad_bottom;
  s.pad_left = p.p.pad_left;
  s.pad_right = p.p.pad_right;
  s.input_elements = p.y_size;
  s.weight_elements = p.w_size;
  s.output_elements = p.x_size;
  s.bias_elements = p.bias_size();
  s.flops = p.flops();
  return s;
}

// The plan with x and y exchanged, for the bias gradient of a transposed convolution (a
// sum over its output, the plan's x, per channel).
detail::ConvPlan output_as_y(const detail::ConvPlan& p) {
  detail::ConvPlan q = p;
  q.K = p.C;
  q.Ho = p.H;
  q.Wo = p.W;
  q.ys_n = p.xs_n; q.ys_c = p.xs_c; q.ys_h = p.xs_h; q.ys_w = p.xs_w;
  q.y_size = p.x_size;
  return q;
}

Conv2dShape shape_of(const detail::ConvPlan& p) {
  if (p.kind == OpKind::ConvTranspose2d) return transposed_shape_of(p);
  Conv2dShape s;
  s.out_h = p.Ho;
  s.out_w = p.Wo;
  s.pad_top = p.pad_t;
  s.pad_bottom = p.pad_b;
  s.pad_left = p.pad_l;
  s.pad_right = p.pad_r;
  s.input_elements = p.x_size;
  s.weight_elements = p.w_size;
  s.output_elements = p.y_size;
  s.bias_elements = p.bias_size();
  s.flops = p.flops();
  return s;
}

}  // namespace

struct Conv2dPrimitive::State {
  Conv2dDesc desc;
  detail::ConvPlan plan;
  Conv2dShape shape;
  Isa isa;
  std::size_t chosen[kPasses];
  // Weights prepacked by set_weights for the forward and backward-data executors.
  AlignedBuffer packed[kPasses];
  bool has_weights = false;
  // set_weights' weights, copied only when they hold Inf or NaN (for the exact paths).
  bool weights_finite = true;
  AlignedBuffer raw_weights;

  template <typename T>
  void run_lc(Pass pass, detail::ExecArgs<T> args, const T* w) const;

  template <typename T>
  const detail::GemmEngine<T>& engine() const { return detail::engine_for<T>(isa); }

  template <typename T>
  const detail::Implementation<T>& impl(Pass pass) const {
    return detail::implementations<T>(plan.kind, pass)[chosen[static_cast<int>(pass)]];
  }

  template <typename T>
  void check_dtype(const char* what) const {
    if (data_type_of<T>() != desc.dtype)
      throw std::invalid_argument(std::string(what) +
                                  ": the element type differs from the descriptor's dtype");
  }

  // Runs a pass's chosen executor with the weights packed now (w given), kept (w null and
  // set_weights called), or not needed; exact where a non-finite operand would meet a
  // padding zero (exact_padding.hpp).
  template <typename T>
  void run(Pass pass, const detail::ExecArgs<T>& args, const T* w) const {
    struct Trim {  // the scratch rule (runtime.hpp): big slots do not outlive the call
      ~Trim() { detail::trim_thread_scratch(true); }
    } trim;
    if (plan.kind == OpKind::LocallyConnected2d) return run_lc<T>(pass, args, w);
    const auto& list = detail::implementations<T>(plan.kind, pass);
    // The exactness rules belong to the convolution pass that runs (a transposed forward
    // is a backward-data, and so on); `pass` still indexes the chosen entries and buffers.
    const Pass cpass = detail::conv_pass(plan.kind, pass);
    std::size_t index = chosen[static_cast<int>(pass)];
    // The weights as given, for the exact paths: the call's, or set_weights' copy (kept
    // only when they are not all finite).
    const T* raw = w ? w : static_cast<const T*>(raw_weights.ptr);
    bool exact_border = false;
    if (list[index].exact_padding) {
      // the executor never multiplies padding: nothing to scan
    } else if (cpass == Pass::Forward) {
      exact_border = detail::any_output_reads_padding(plan) &&
                     !(w ? detail::all_finite_parallel(w, plan.w_size) : weights_finite);
    } else if (cpass == Pass::BackwardData) {
      if (std::strcmp(list[index].name, "col2im") != 0 &&
          detail::full_correlation_reads_padding(plan) &&
          !(w ? detail::all_finite_parallel(w, plan.w_size) : weights_finite)) {
        for (std::size_t i = 0; i < list.size(); ++i)
          if (std::strcmp(list[i].name, "col2im") == 0) index = i;
      }
    } else if (detail::any_output_reads_padding(plan) &&
               !detail::border_all_finite(plan, args.dy)) {
      detail::backward_weight_exact(plan, args.dy, args.x, args.out);
      return;
    }
    const detail::Implementation<T>& im = list[index];
    const bool packed_now = w || index != chosen[static_cast<int>(pass)];
    const detail::GemmEngine<T>& e = detail::engine_for_entry(im, plan, engine<T>());
    const detail::WeightPacking wp = im.weight_packing(plan);
    detail::PrepackedGroups<T> weights{nullptr, 0, 0};
    detail::ExecArgs<T> run_args = args;
    if (!wp.none()) {
      const int64_t group_elems = wp.group_elems(e.blocking);
      const T* data;
      if (packed_now && raw && wp.as_it_goes) {
        // The executor packs each piece of the weights right before using it.
        run_args.w = raw;
        data = nullptr;
      } else if (packed_now && raw) {
        T* dst = detail::thread_scratch_as<detail::Scratch::Weights, T>(
            detail::checked_mul(plan.G, group_elems, "the packed weights"), "the packed weights");
        im.pack_weights(plan, e.blocking, raw, dst);
        data = dst;
      } else {
        if (!has_weights)
          throw std::invalid_argument(std::string(pass_name(pass)) +
                                      ": weight is null and no weights were set (set_weights)");
        data = static_cast<const T*>(packed[static_cast<int>(pass)].ptr);
      }
      weights = detail::PrepackedGroups<T>{data, wp.padded(e.blocking), group_elems};
    }
    im.run(plan, e, run_args, weights);
    if (exact_border)
      detail::forward_border_exact(plan, args.x, raw, args.bias, args.relu, args.out);
  }
};

template <typename T>
void Conv2dPrimitive::State::run_lc(Pass pass, detail::ExecArgs<T> args, const T* w) const {
  // Locally connected: the weights are packed up front per call (w given) or were packed
  // by set_weights (w null). Padding is never part of the result (exact_padding.hpp's
  // rule), without a scan: forward packs the weights of padding taps as 0 (so a padding
  // zero meets 0, not Inf/NaN); backward-data never adds a padding tap's row into dx;
  // backward-weight sets the padding taps of dW to their definition, 0, after the executor
  // (which formed dy · 0 there).
  const detail::Implementation<T>& im = impl<T>(pass);
  const detail::GemmEngine<T>& e = engine<T>();
  const detail::WeightPacking wp = im.weight_packing(plan);
  detail::PrepackedGroups<T> weights{nullptr, 0, 0};
  if (!wp.none()) {
    if (w && wp.as_it_goes) {
      // The executor packs each position's weights right before using them.
      args.w = w;
      weights = detail::PrepackedGroups<T>{nullptr, wp.padded(e.blocking), wp.group_elems(e.blocking)};
    } else if (w) {
      // Packed once per call, in parallel, into the calling thread's weight scratch (the
      // executors read every position's operand in place, as with set_weights).
      const int64_t group_elems = wp.group_elems(e.blocking);
      T* dst = detail::thread_scratch_as<detail::Scratch::Weights, T>(
          detail::checked_mul(plan.packed_operands(), group_elems, "the packed weights"),
          "the packed weights");
      im.pack_weights(plan, e.blocking, w, dst);
      weights = detail::PrepackedGroups<T>{dst, wp.padded(e.blocking), group_elems};
    } else {
      if (!has_weights)
        throw std::invalid_argument(std::string(pass_name(pass)) +
                                    ": weight is null and no weights were set (set_weights)");
      weights = detail::PrepackedGroups<T>{static_cast<const T*>(packed[static_cast<int>(pass)].ptr),
                                           wp.padded(e.blocking), wp.group_elems(e.blocking)};
    }
  }
  im.run(plan, e, args, weights);
  if (pass == Pass::BackwardWeight) detail::lc_zero_padding_taps(plan, args.out);
}

Conv2dPrimitive::Conv2dPrimitive(const Conv2dDesc& desc, const PrimitiveOptions& options)
    : state_(std::make_unique<State>()) {
  State& s = *state_;
  s.desc = desc;
  s.plan = detail::make_plan(desc.params, desc.kind);
  s.plan.algorithm = desc.algorithm;
  s.shape = shape_of(s.plan);
  s.isa = active_isa();
  if (desc.algorithm == Algorithm::Winograd) {
    // Asked for, Winograd must apply (the forward list's winograd entry); the backward
    // passes stay exact.
    const char* why = desc.dtype == DataType::Float32
                          ? detail::winograd_why_not(s.plan, s.engine<float>().blocking)
                          : detail::winograd_why_not(s.plan, s.engine<double>().blocking);
    if (why)
      throw std::invalid_argument(std::string("algorithm='winograd' cannot compute this layer: ") +
                                  why);
  }
  const std::string* forced[kPasses] = {&options.forward, &options.backward_data,
                                        &options.backward_weight};
  for (int i = 0; i < kPasses; ++i) {
    const Pass pass = static_cast<Pass>(i);
    s.chosen[i] = desc.dtype == DataType::Float32
                      ? choose<float>(pass, s.plan, s.engine<float>().blocking, *forced[i])
                      : choose<double>(pass, s.plan, s.engine<double>().blocking, *forced[i]);
  }
}

Conv2dPrimitive::~Conv2dPrimitive() = default;
Conv2dPrimitive::Conv2dPrimitive(Conv2dPrimitive&&) noexcept = default;
Conv2dPrimitive& Conv2dPrimitive::operator=(Conv2dPrimitive&&) noexcept = default;

const Conv2dDesc& Conv2dPrimitive::desc() const { return state_->desc; }
const Conv2dShape& Conv2dPrimitive::shape() const { return state_->shape; }
Isa Conv2dPrimitive::isa() const { return state_->isa; }

const char* Conv2dPrimitive::implementation(Pass pass) const {
  return entry_name(state_->desc.kind, pass, state_->chosen[static_cast<int>(pass)]);
}

std::vector<ImplementationStatus> Conv2dPrimitive::implementations(Pass pass) const {
  const State& s = *state_;
  auto judge = [&](const auto& list, const Blocking& bl) {
    std::vector<ImplementationStatus> out;
    for (const auto& im : list) {
      ImplementationStatus st;
      st.name = im.name;
      const char* why = im.why_not(s.plan, bl);
      st.applies = why == nullptr;
      const char* declined = st.applies ? im.declines(s.plan, bl) : nullptr;
      st.preferred = st.applies && declined == nullptr;
      st.reason = why ? why : (declined ? declined : "");
      out.push_back(std::move(st));
    }
    return out;
  };
  return s.desc.dtype == DataType::Float32
             ? judge(detail::implementations<float>(s.plan.kind, pass), s.engine<float>().blocking)
             : judge(detail::implementations<double>(s.plan.kind, pass),
                     s.engine<double>().blocking);
}

template <typename T>
void Conv2dPrimitive::forward(const T* x, const T* w, const T* bias, T* y, Activation act) const {
  const State& s = *state_;
  s.check_dtype<T>("forward");
  if (s.plan.kind == OpKind::ConvTranspose2d) {
    // y = act(backward-data of the equivalent convolution at dy = x, + bias).
    if (s.plan.x_size == 0) return;  // (an empty batch: no input either)
    detail::CallScope scope;
    detail::ExecArgs<T> args;
    args.dy = x;
    args.bias = bias;
    args.out = y;
    args.relu = act == Activation::Relu;
    s.run<T>(Pass::Forward, args, w);
    return;
  }
  if (s.plan.y_size == 0) return;
  detail::CallScope scope;
  detail::ExecArgs<T> args;
  args.x = x;
  args.bias = bias;
  args.out = y;
  args.relu = act == Activation::Relu;
  s.run<T>(Pass::Forward, args, w);
}

template <typename T>
void Conv2dPrimitive::backward_data(const T* dy, const T* w, T* dx) const {
  const State& s = *state_;
  s.check_dtype<T>("backward_data");
  if (s.plan.kind == OpKind::ConvTranspose2d) {
    // dx = the equivalent convolution's forward of dy (no bias).
    if (s.plan.y_size == 0) return;
    detail::CallScope scope;
    detail::ExecArgs<T> args;
    args.x = dy;
    args.out = dx;
    s.run<T>(Pass::BackwardData, args, w);
    return;
  }
  if (s.plan.x_size == 0) return;
  if (s.plan.y_size == 0) {  // no output position: nothing reaches the input
    std::memset(dx, 0, sizeof(T) * static_cast<std::size_t>(s.plan.x_size));
    return;
  }
  detail::CallScope scope;
  detail::ExecArgs<T> args;
  args.dy = dy;
  args.out = dx;
  s.run<T>(Pass::BackwardData, args, w);
}

template <typename T>
void Conv2dPrimitive::backward_weight(const T* dy, const T* x, T* dw) const {
  const State& s = *state_;
  s.check_dtype<T>("backward_weight");
  if (s.plan.w_size == 0) return;
  if (s.plan.y_size == 0) {  // an empty batch: the sum over positions is empty
    std::memset(dw, 0, sizeof(T) * static_cast<std::size_t>(s.plan.w_size));
    return;
  }
  detail::CallScope scope;
  detail::ExecArgs<T> args;
  // A transposed convolution's dw is the equivalent convolution's with x and dy exchanged.
  const bool transposed = s.plan.kind == OpKind::ConvTranspose2d;
  args.dy = transposed ? x : dy;
  args.x = transposed ? dy : x;
  args.out = dw;
  s.run<T>(Pass::BackwardWeight, args, nullptr);
}

template <typename T>
void Conv2dPrimitive::backward_bias(const T* dy, T* db) const {
  const State& s = *state_;
  s.check_dtype<T>("backward_bias");
  detail::CallScope scope;
  if (s.plan.kind == OpKind::LocallyConnected2d) detail::lc_backward_bias<T>(s.plan, dy, db);
  else if (s.plan.kind == OpKind::ConvTranspose2d)
    detail::backward_bias<T>(output_as_y(s.plan), dy, db);
  else detail::backward_bias<T>(s.plan, dy, db);
}

template <typename T>
void Conv2dPrimitive::set_weights(const T* w) {
  State& s = *state_;
  s.check_dtype<T>("set_weights");
  if (!w) throw std::invalid_argument("set_weights: weight is null");
  AlignedBuffer packed[kPasses];
  detail::CallScope scope;
  for (Pass pass : {Pass::Forward, Pass::BackwardData}) {
    const detail::Implementation<T>& im = s.impl<T>(pass);
    const detail::GemmEngine<T>& e = detail::engine_for_entry(im, s.plan, s.engine<T>());
    const detail::WeightPacking wp = im.weight_packing(s.plan);
    if (wp.none() || s.plan.w_size == 0) continue;
    const int64_t elems = detail::checked_mul(s.plan.packed_operands(),
                                              wp.group_elems(e.blocking), "the packed weights");
    AlignedBuffer buf(detail::checked_bytes<T>(elems, "the packed weights"), "the packed weights");
    im.pack_weights(s.plan, e.blocking, w, static_cast<T*>(buf.ptr));
    packed[static_cast<int>(pass)] = std::move(buf);
  }
  const bool finite = detail::all_finite_parallel(w, s.plan.w_size);
  AlignedBuffer raw;
  if (!finite) {
    const std::size_t bytes = detail::checked_bytes<T>(s.plan.w_size, "a copy of the weights");
    raw = AlignedBuffer(bytes, "a copy of the weights");
    std::memcpy(raw.ptr, w, bytes);
  }
  for (int i = 0; i < kPasses; ++i) s.packed[i] = std::move(packed[i]);
  s.raw_weights = std::move(raw);
  s.weights_finite = finite;
  s.has_weights = true;
}

void Conv2dPrimitive::clear_weights() {
  for (auto& b : state_->packed) b = AlignedBuffer();
  state_->raw_weights = AlignedBuffer();
  state_->weights_finite = true;
  state_->has_weights = false;
}

bool Conv2dPrimitive::has_weights() const { return state_->has_weights; }

#define CONVCORE_INSTANTIATE_PRIMITIVE(T)                                                  \
  template void Conv2dPrimitive::forward<T>(const T*, const T*, const T*, T*, Activation) \
      const;                                                                               \
  template void Conv2dPrimitive::backward_data<T>(const T*, const T*, T*) const;           \
  template void Conv2dPrimitive::backward_weight<T>(const T*, const T*, T*) const;         \
  template void Conv2dPrimitive::backward_bias<T>(const T*, T*) const;                     \
  template void Conv2dPrimitive::set_weights<T>(const T*);
CONVCORE_INSTANTIATE_PRIMITIVE(float)
CONVCORE_INSTANTIATE_PRIMITIVE(double)
#undef CONVCORE_INSTANTIATE_PRIMITIVE

}  // namespace convcore
