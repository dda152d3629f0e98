// conv2d forward / backward-data / backward-weight / backward-bias against the direct-loop
// reference on a table of configurations, for both layouts, both dtypes and every ISA the
// CPU has; every implementation of every pass forced over shapes it applies to; prepacked
// weights; bitwise determinism across thread counts; validation and the worked numbers of
// the CS231n notes (AlexNet conv1, the (11,11,4) NumPy example).
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <map>
#include <optional>
#include <random>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

#include "convcore/config.hpp"
#include "convcore/conv2d.hpp"
#include "reference.hpp"
#include "test_support.hpp"

namespace convcore_test {
namespace {

using convcore::Activation;
using convcore::Conv2dParams;
using convcore::Layout;
using convcore::ShapeRule;

// One row of the configuration table; each row runs in NCHW and in NHWC.
struct ConvCase {
  const char* name;
  int64_t N, C, H, W, K, R, S;
  int64_t sh = 1, sw = 1, dh = 1, dw = 1;
  int64_t pt = 0, pb = 0, pl = 0, pr = 0;
  int64_t G = 1;
  ShapeRule rule = ShapeRule::Strict;
  bool bias = true;
  bool relu = false;
};

void PrintTo(const ConvCase& c, std::ostream* os) {
  *os << c.name << " {N=" << c.N << " C=" << c.C << " H=" << c.H << " W=" << c.W << " K=" << c.K
      << " R=" << c.R << " S=" << c.S << " stride=(" << c.sh << "," << c.sw << ") dilation=(" << c.dh
      << "," << c.dw << ") pad=(" << c.pt << "," << c.pb << "," << c.pl << "," << c.pr
      << ") groups=" << c.G << " rule="
      << (c.rule == ShapeRule::Strict ? "strict" : c.rule == ShapeRule::Crop ? "crop" : "pad")
      << " bias=" << c.bias << " relu=" << c.relu << "}";
}

Conv2dParams params_of(const ConvCase& c, Layout layout) {
  Conv2dParams p;
  p.batch = c.N;
  p.in_channels = c.C;
  p.in_h = c.H;
  p.in_w = c.W;
  p.out_channels = c.K;
  p.kernel_h = c.R;
  p.kernel_w = c.S;
  p.stride_h = c.sh;
  p.stride_w = c.sw;
  p.dilation_h = c.dh;
  p.dilation_w = c.dw;
  p.pad_top = c.pt;
  p.pad_bottom = c.pb;
  p.pad_left = c.pl;
  p.pad_right = c.pr;
  p.groups = c.G;
  p.layout = layout;
  p.shape_rule = c.rule;
  return p;
}

// Builders for the table: designated-initialiser style without C++20.
struct Case {
  ConvCase c;
  Case(const char* name, int64_t N, int64_t C, int64_t H, int64_t W, int64_t K, int64_t R, int64_t S) {
    c.name = name;
    c.N = N; c.C = C; c.H = H; c.W = W; c.K = K; c.R = R; c.S = S;
  }
  Case& stride(int64_t h, int64_t w) { c.sh = h; c.sw = w; return *this; }
  Case& dilation(int64_t h, int64_t w) { c.dh = h; c.dw = w; return *this; }
  Case& pad(int64_t p) { c.pt = c.pb = c.pl = c.pr = p; return *this; }
  Case& pad(int64_t t, int64_t b, int64_t l, int64_t r) { c.pt = t; c.pb = b; c.pl = l; c.pr = r; return *this; }
  Case& groups(int64_t g) { c.G = g; return *this; }
  Case& rule(ShapeRule r) { c.rule = r; return *this; }
  Case& no_bias() { c.bias = false; return *this; }
  Case& relu() { c.relu = true; return *this; }
  operator ConvCase() const { return c; }
};

// Sizes are modest: the oracle is naive long-double loops. Comments give Ho×Wo.
const std::vector<ConvCase>& conv_cases() {
  static const std::vector<ConvCase> cases = {
      Case("basic_3x3_pad1", 2, 3, 9, 9, 5, 3, 3).pad(1),                      // 9×9
      Case("valid_3x3_no_bias", 1, 4, 7, 7, 6, 3, 3).no_bias(),                // 5×5
      Case("stride2_valid", 2, 3, 7, 7, 4, 3, 3).stride(2, 2),                 // 3×3
      Case("rect_kernel_2x5", 1, 4, 10, 12, 7, 2, 5).pad(1, 0, 2, 2),          // 9×12
      Case("rect_kernel_5x1", 2, 3, 11, 6, 5, 5, 1).pad(2),                    // 11×10
      Case("per_axis_stride", 2, 3, 13, 16, 6, 3, 4).stride(2, 3).pad(1, 1, 0, 0),  // 7×5
      Case("per_axis_dilation", 1, 5, 12, 11, 4, 3, 3).dilation(2, 1).pad(1),  // 10×11
      Case("stride_and_dilation", 2, 4, 15, 13, 5, 3, 2).stride(2, 3).dilation(3, 2).pad(2, 2, 1, 1),  // 7×5
      Case("asymmetric_padding", 2, 3, 8, 9, 4, 3, 3).pad(2, 0, 1, 3),         // 8×11
      Case("pad_wider_than_kernel", 1, 2, 5, 6, 3, 2, 2).pad(3, 3, 3, 3),      // 10×11
      Case("stride_larger_than_kernel", 2, 3, 11, 13, 4, 2, 2).stride(3, 4).rule(ShapeRule::Crop),  // 4×3
      Case("dilated_kernel_fills_input", 1, 3, 9, 9, 4, 3, 3).dilation(4, 4),  // 1×1
      Case("groups2", 2, 6, 8, 8, 4, 3, 3).groups(2).pad(1),                   // 8×8
      Case("groups3_uneven_kg", 1, 9, 7, 9, 15, 3, 1).groups(3).pad(0, 0, 1, 1),  // 5×11
      Case("depthwise", 2, 8, 9, 9, 8, 3, 3).groups(8).pad(1),                 // 9×9
      Case("depthwise_multiplier2", 1, 5, 11, 7, 10, 3, 3).groups(5).stride(2, 1).pad(1).relu(),  // 6×7
      Case("depthwise_stride2", 2, 16, 12, 12, 16, 5, 5).groups(16).stride(2, 2).pad(2).rule(ShapeRule::Crop),  // 6×6
      // Depthwise kernels (depthwise_nchw / depthwise_nhwc): multipliers, strides, dilation,
      // maps smaller than the kernel, rows of several vector chunks, channel blocks, and
      // more taps than the kernels keep masks or sums for in registers.
      Case("depthwise_m3_stride3_dilated", 2, 4, 13, 14, 12, 3, 2).groups(4).stride(3, 3).dilation(2, 1).pad(1, 2, 0, 3).rule(ShapeRule::Crop).relu(),  // 4×5
      Case("depthwise_1x1_map", 3, 5, 1, 1, 10, 3, 3).groups(5).pad(1),       // 1×1
      Case("depthwise_kernel_larger_than_input", 2, 6, 2, 3, 6, 5, 5).groups(6).pad(2),  // 2×3
      Case("depthwise_wide_rows", 2, 3, 5, 75, 3, 3, 5).groups(3).pad(1, 1, 2, 2).relu(),  // 5×75
      Case("depthwise_wide_rows_stride2", 1, 3, 9, 70, 6, 3, 3).groups(3).stride(2, 2).pad(1).rule(ShapeRule::Crop),  // 5×35
      Case("depthwise_many_channels", 1, 70, 5, 6, 70, 3, 3).groups(70).pad(1),  // 5×6
      Case("depthwise_m2_many_channels", 1, 40, 4, 5, 80, 3, 3).groups(40).pad(1).relu(),  // 4×5
      Case("depthwise_m8_5x5", 1, 2, 7, 9, 16, 5, 5).groups(2).pad(2),         // 7×9
      // Groups with as many filters as channels (2, 4, 8): grouped_nhwc (lane permutations).
      Case("grouped_cg4", 2, 8, 7, 9, 8, 3, 3).groups(2).pad(1).relu(),          // 7×9
      Case("grouped_cg8_strided", 1, 32, 9, 11, 32, 3, 2).groups(4).stride(2, 1).dilation(1, 2).pad(1, 0, 2, 1).rule(ShapeRule::Crop),  // 5×10
      Case("grouped_cg2_rows", 2, 6, 5, 6, 6, 1, 3).groups(3).pad(0, 0, 1, 1),   // 5×6
      Case("grouped_cg8_blocks", 1, 272, 3, 4, 272, 3, 3).groups(34).pad(1),    // 3×4, 2 blocks
      Case("crop_rule", 2, 3, 10, 10, 4, 3, 3).stride(2, 2).rule(ShapeRule::Crop),  // 4×4
      // NHWC pixel_split: 4446 pixels, cut into 4 chunks whose partial dWs are added.
      Case("pixel_split_chunks", 2, 3, 40, 56, 5, 3, 3).pad(1, 0, 2, 1),      // 39×57
      // More filters than any MC block: pixel_split packs dYᵀ block by block.
      Case("many_filters", 1, 2, 6, 7, 1100, 2, 2).no_bias(),                 // 5×6
      Case("pad_rule", 2, 3, 10, 10, 4, 3, 3).stride(2, 2).rule(ShapeRule::Pad),    // 5×5
      Case("pad_rule_asymmetric", 1, 3, 5, 11, 4, 3, 3).stride(3, 2).pad(1, 0, 0, 1).rule(ShapeRule::Pad),  // 2×6
      Case("relu_with_bias", 2, 4, 8, 8, 8, 3, 3).pad(1).relu(),               // 8×8
      Case("relu_no_bias", 1, 4, 8, 8, 8, 3, 3).pad(1).relu().no_bias(),       // 8×8
      Case("batch3", 3, 5, 6, 7, 6, 2, 3).pad(0, 1, 1, 0),                     // 6×6
      Case("batch0", 0, 3, 5, 5, 4, 3, 3),                                     // 3×3, no images
      Case("blocked_reduction_CRS_600", 2, 67, 6, 6, 9, 3, 3).pad(1),          // C·R·S = 603
      Case("blocked_reduction_CRS_1100", 1, 123, 5, 6, 7, 3, 3).pad(1),        // C·R·S = 1107
      Case("blocked_reduction_grouped", 1, 140, 5, 5, 6, 3, 3).groups(2).pad(1),  // Cg·R·S = 630
      Case("bwd_weight_deep_reduction", 3, 2, 20, 20, 3, 3, 3).pad(1),        // N·Ho·Wo = 1200
      Case("bwd_data_deep_reduction", 1, 2, 4, 4, 1100, 3, 3).pad(1),         // K = 1100
      Case("bwd_data_deep_reduction_grouped", 2, 4, 3, 3, 1040, 2, 2).groups(2).pad(1),  // Kg = 520
      Case("K13_P33", 1, 3, 5, 13, 13, 3, 3),                                  // 3×11
      Case("K24_P32", 2, 3, 6, 10, 24, 3, 3),                                  // 4×8
      Case("K25_P65", 1, 4, 7, 15, 25, 3, 3),                                  // 5×13
      Case("K17_P17", 2, 5, 17, 3, 17, 1, 3),                                  // 17×1
      Case("K33_P96", 1, 6, 8, 12, 33, 1, 1),                                  // 8×12
      Case("K7_P31", 3, 5, 31, 1, 7, 1, 1),                                    // 31×1
      Case("pointwise_1x1", 2, 16, 7, 9, 12, 1, 1),                            // 7×9
      Case("pointwise_1x1_stride2", 2, 8, 9, 9, 16, 1, 1).stride(2, 2),        // 5×5
      Case("pointwise_1x1_padded", 1, 4, 5, 5, 3, 1, 1).pad(1),                // 7×7
      Case("row_vector_input", 2, 3, 1, 20, 5, 1, 5).stride(1, 3).rule(ShapeRule::Crop),  // 1×6
      Case("alexnet_like_11x11_s4", 1, 3, 23, 23, 8, 11, 11).stride(4, 4),     // 3×3
      // Channels per group a multiple of 32 (every kernel's NR divides them): pixel rows.
      Case("channels32_3x3_pad1", 2, 32, 5, 6, 12, 3, 3).pad(1),               // 5×6
      Case("channels64_grouped_strided", 1, 128, 7, 6, 10, 3, 2).groups(2).stride(2, 1).dilation(1, 2).rule(ShapeRule::Crop),  // 3×4
      Case("channels32_1x1", 2, 32, 4, 5, 8, 1, 1),                            // 4×5
      Case("numpy_example_5x5_s2", 2, 4, 11, 11, 12, 5, 5).stride(2, 2),       // 4×4
      // NHWC forward, one segment per kernel row (indirect_nhwc_rows): windows crossing
      // both side borders and the top/bottom padding, more filters than one NR, and kernel
      // rows cut across KC blocks (S·C = 341, depth 1705).
      Case("rows_stem_7x7_s2", 2, 3, 19, 17, 40, 7, 7).stride(2, 2).pad(3).rule(ShapeRule::Crop).relu(),  // 9×8
      Case("rows_kernel_wider_than_map", 1, 2, 5, 4, 5, 3, 6).dilation(2, 1).pad(2, 3, 1, 4),  // 6×4
      Case("rows_across_kc_blocks", 1, 31, 8, 14, 9, 5, 11).dilation(2, 1).pad(2, 2, 5, 5),  // 4×14
  };
  return cases;
}

// Direct bias gradient (there is no reference function for it).
template <typename T>
std::vector<T> direct_bias_grad(const Problem& p, const T* dy) {
  std::vector<long double> acc(static_cast<std::size_t>(p.K), 0);
  for (int64_t n = 0; n < p.N; ++n)
    for (int64_t k = 0; k < p.K; ++k)
      for (int64_t h = 0; h < p.Ho; ++h)
        for (int64_t w = 0; w < p.Wo; ++w) acc[k] += dy[n * p.ys_n + k * p.ys_c + h * p.ys_h + w * p.ys_w];
  return std::vector<T>(acc.begin(), acc.end());
}

template <typename T>
void expect_close(const char* what, const Guarded<T>& got, const std::vector<T>& want,
                  const std::vector<T>& magnitude) {
  const double err = scaled_error(got.data(), want.data(), magnitude.data(), want.size());
  EXPECT_LE(err, tolerance<T>()) << what << ": error relative to the magnitude " << err;
  EXPECT_TRUE(got.guard_intact()) << what << " wrote past the end of its output";
}

// All four passes of one case in one layout and dtype, against the oracle, for each ISA.
template <typename T>
void check_case(const ConvCase& cc, Layout layout) {
  SCOPED_TRACE(std::string(type_name<T>()) + (layout == Layout::NCHW ? " NCHW" : " NHWC"));
  const Problem p = make_problem(params_of(cc, layout));
  std::mt19937 rng(static_cast<unsigned>(p.x_size * 31 + p.w_size * 7 + p.K));
  const auto x = random_vector<T>(static_cast<std::size_t>(p.x_size), rng);
  const auto w = random_vector<T>(static_cast<std::size_t>(p.w_size), rng);
  const auto b = random_vector<T>(static_cast<std::size_t>(p.K), rng);
  const auto dy = random_vector<T>(static_cast<std::size_t>(p.y_size), rng);
  const T* bias = cc.bias ? b.data() : nullptr;
  const Activation act = cc.relu ? Activation::Relu : Activation::None;

  std::vector<T> y_ref(static_cast<std::size_t>(p.y_size)), dx_ref(static_cast<std::size_t>(p.x_size)),
      dw_ref(static_cast<std::size_t>(p.w_size));
  reference::conv2d_forward<T>(p, x.data(), w.data(), bias, y_ref.data(), act);
  reference::conv2d_backward_data<T>(p, dy.data(), w.data(), dx_ref.data());
  reference::conv2d_backward_weight<T>(p, dy.data(), x.data(), dw_ref.data());
  const std::vector<T> db_ref = direct_bias_grad(p, dy.data());

  // The oracle on absolute values: the scale of the rounding error (see scaled_error).
  const auto ax = abs_copy(x), aw = abs_copy(w), ab = abs_copy(b), ady = abs_copy(dy);
  std::vector<T> y_mag(y_ref.size()), dx_mag(dx_ref.size()), dw_mag(dw_ref.size());
  reference::conv2d_forward<T>(p, ax.data(), aw.data(), cc.bias ? ab.data() : nullptr,
                                         y_mag.data(), Activation::None);
  reference::conv2d_backward_data<T>(p, ady.data(), aw.data(), dx_mag.data());
  reference::conv2d_backward_weight<T>(p, ady.data(), ax.data(), dw_mag.data());
  const std::vector<T> db_mag = direct_bias_grad(p, ady.data());

  for_each_isa([&](convcore::Isa) {
    // Outputs start as NaN: an element the pass forgets to write fails the comparison.
    Guarded<T> y(y_ref.size()), dx(dx_ref.size()), dw(dw_ref.size()), db(db_ref.size());
    conv2d_forward<T>(p, x.data(), w.data(), bias, y.data(), act);
    expect_close("forward", y, y_ref, y_mag);
    conv2d_backward_data<T>(p, dy.data(), w.data(), dx.data());
    expect_close("backward_data", dx, dx_ref, dx_mag);
    conv2d_backward_weight<T>(p, dy.data(), x.data(), dw.data());
    expect_close("backward_weight", dw, dw_ref, dw_mag);
    conv2d_backward_bias<T>(p, dy.data(), db.data());
    expect_close("backward_bias", db, db_ref, db_mag);
  });
}

class ConvCaseTest : public testing::TestWithParam<ConvCase> {};

TEST_P(ConvCaseTest, MatchesReference) {
  const ConvCase& cc = GetParam();
  for (Layout layout : {Layout::NCHW, Layout::NHWC}) {
    check_case<float>(cc, layout);
    check_case<double>(cc, layout);
  }
}

INSTANTIATE_TEST_SUITE_P(Table, ConvCaseTest, testing::ValuesIn(conv_cases()),
                         [](const testing::TestParamInfo<ConvCase>& info) {
                           return std::string(info.param.name);
                         });

// Every entry of every pass's implementation list, forced, on every ISA, over each table
// shape it applies to — plus each applicable forward and backward-data entry with the
// weights prepacked by set_weights (which must give the per-call result bitwise).
template <typename T>
void check_every_implementation(const ConvCase& cc, Layout layout) {
  using convcore::Pass;
  SCOPED_TRACE(std::string(type_name<T>()) + (layout == Layout::NCHW ? " NCHW" : " NHWC"));
  const Problem p = make_problem(params_of(cc, layout));
  std::mt19937 rng(static_cast<unsigned>(p.x_size * 17 + p.w_size * 3 + p.K));
  const auto x = random_vector<T>(static_cast<std::size_t>(p.x_size), rng);
  const auto w = random_vector<T>(static_cast<std::size_t>(p.w_size), rng);
  const auto b = random_vector<T>(static_cast<std::size_t>(p.K), rng);
  const auto dy = random_vector<T>(static_cast<std::size_t>(p.y_size), rng);
  const T* bias = cc.bias ? b.data() : nullptr;
  const Activation act = cc.relu ? Activation::Relu : Activation::None;
  std::vector<T> y_ref(p.y_size), dx_ref(p.x_size), dw_ref(p.w_size);
  reference::conv2d_forward<T>(p, x.data(), w.data(), bias, y_ref.data(), act);
  reference::conv2d_backward_data<T>(p, dy.data(), w.data(), dx_ref.data());
  reference::conv2d_backward_weight<T>(p, dy.data(), x.data(), dw_ref.data());
  const auto ax = abs_copy(x), aw = abs_copy(w), ab = abs_copy(b), ady = abs_copy(dy);
  std::vector<T> y_mag(p.y_size), dx_mag(p.x_size), dw_mag(p.w_size);
  reference::conv2d_forward<T>(p, ax.data(), aw.data(), cc.bias ? ab.data() : nullptr,
                               y_mag.data());
  reference::conv2d_backward_data<T>(p, ady.data(), aw.data(), dx_mag.data());
  reference::conv2d_backward_weight<T>(p, ady.data(), ax.data(), dw_mag.data());

  for_each_isa([&](convcore::Isa) {
    for (Pass pass : {Pass::Forward, Pass::BackwardData, Pass::BackwardWeight}) {
      for (const convcore::ImplementationStatus& st : primitive<T>(p).implementations(pass)) {
        if (!st.applies) continue;
        SCOPED_TRACE(std::string(convcore::pass_name(pass)) + " forced to " + st.name);
        convcore::PrimitiveOptions opt;
        (pass == Pass::Forward         ? opt.forward
         : pass == Pass::BackwardData ? opt.backward_data
                                      : opt.backward_weight) = st.name;
        convcore::Conv2dPrimitive prim = primitive<T>(p, opt);
        ASSERT_EQ(std::string(prim.implementation(pass)), st.name);
        if (pass == Pass::Forward) {
          Guarded<T> y(y_ref.size()), y2(y_ref.size());
          prim.forward(x.data(), w.data(), bias, y.data(), act);
          expect_close("forward", y, y_ref, y_mag);
          prim.set_weights(w.data());
          prim.forward<T>(x.data(), nullptr, bias, y2.data(), act);
          EXPECT_EQ(0, std::memcmp(y.data(), y2.data(), y_ref.size() * sizeof(T)))
              << "prepacked weights: " << first_difference(y.data(), y2.data(), y_ref.size());
        } else if (pass == Pass::BackwardData) {
          Guarded<T> dx(dx_ref.size()), dx2(dx_ref.size());
          prim.backward_data(dy.data(), w.data(), dx.data());
          expect_close("backward_data", dx, dx_ref, dx_mag);
          prim.set_weights(w.data());
          prim.backward_data<T>(dy.data(), nullptr, dx2.data());
          EXPECT_EQ(0, std::memcmp(dx.data(), dx2.data(), dx_ref.size() * sizeof(T)))
              << "prepacked weights: " << first_difference(dx.data(), dx2.data(), dx_ref.size());
        } else {
          Guarded<T> dw(dw_ref.size());
          prim.backward_weight(dy.data(), x.data(), dw.data());
          expect_close("backward_weight", dw, dw_ref, dw_mag);
        }
        if (testing::Test::HasFailure()) return;
      }
    }
  });
}

class ConvImplementationTest : public testing::TestWithParam<ConvCase> {};

TEST_P(ConvImplementationTest, EveryApplicableEntryMatchesReference) {
  const ConvCase& cc = GetParam();
  for (Layout layout : {Layout::NCHW, Layout::NHWC}) {
    check_every_implementation<float>(cc, layout);
    check_every_implementation<double>(cc, layout);
  }
}

INSTANTIATE_TEST_SUITE_P(Table, ConvImplementationTest, testing::ValuesIn(conv_cases()),
                         [](const testing::TestParamInfo<ConvCase>& info) {
                           return std::string(info.param.name);
                         });

// Every entry applies to some table shape in some layout (else the sweep misses it), the
// reported entry is the one chosen, and forcing what does not apply or does not exist fails
// with a message naming it.
TEST(Primitive, ImplementationListsAndForcing) {
  using convcore::Pass;
  std::map<std::string, int> reached;
  for (const ConvCase& cc : conv_cases())
    for (Layout layout : {Layout::NCHW, Layout::NHWC}) {
      const Problem p = make_problem(params_of(cc, layout));
      for (convcore::Algorithm algorithm :
           {convcore::Algorithm::Exact, convcore::Algorithm::Winograd}) {
      convcore::Conv2dDesc desc{convcore::OpKind::Conv2d, p.params, convcore::DataType::Float32};
      desc.algorithm = algorithm;
      std::optional<convcore::Conv2dPrimitive> made;
      try {
        made.emplace(desc);
      } catch (const std::invalid_argument& e) {
        // Winograd asked for where it cannot compute: rejected, naming the rule.
        EXPECT_EQ(algorithm, convcore::Algorithm::Winograd) << e.what();
        EXPECT_NE(std::string(e.what()).find("algorithm='winograd' cannot compute"),
                  std::string::npos) << e.what();
        continue;
      }
      const convcore::Conv2dPrimitive& prim = *made;
      for (Pass pass : {Pass::Forward, Pass::BackwardData, Pass::BackwardWeight}) {
        const auto list = prim.implementations(pass);
        ASSERT_FALSE(list.empty());
        // The chosen entry is the first that applies and is preferred.
        std::string first;
        for (const auto& st : list) {
          reached[std::string(convcore::pass_name(pass)) + "/" + st.name] += st.applies;
          if (first.empty() && st.preferred) first = st.name;
          if (!st.applies) {
            EXPECT_FALSE(st.reason.empty()) << st.name << " gives no reason";
          }
        }
        EXPECT_FALSE(first.empty()) << cc.name << ": no entry applies and is preferred";
        EXPECT_EQ(first, prim.implementation(pass)) << cc.name;
        if (algorithm == convcore::Algorithm::Winograd && pass == Pass::Forward) {
          EXPECT_EQ(first.rfind("winograd_f4x3", 0), 0u) << cc.name;
        }
      }
      }
    }
  for (const auto& [name, count] : reached) {
    EXPECT_GT(count, 0) << name << " is never exercised";
  }

  const Problem strided = make_problem(params_of(Case("s2", 1, 3, 9, 9, 4, 3, 3).stride(2, 2),
                                                 Layout::NCHW));
  convcore::PrimitiveOptions opt;
  opt.forward = "direct_stride1";
  try {
    primitive<float>(strided, opt);
    ADD_FAILURE() << "forcing direct_stride1 on a stride-2 problem did not throw";
  } catch (const std::invalid_argument& e) {
    EXPECT_NE(std::string(e.what()).find("stride 1"), std::string::npos) << e.what();
  }
  opt.forward = "no_such_thing";
  try {
    primitive<float>(strided, opt);
    ADD_FAILURE() << "forcing an unknown implementation did not throw";
  } catch (const std::invalid_argument& e) {
    EXPECT_NE(std::string(e.what()).find("im2col_per_image"), std::string::npos) << e.what();
  }
  // Prepacked weights are needed when w is null; the dtype must match the descriptor.
  const convcore::Conv2dPrimitive prim = primitive<float>(strided);
  std::vector<float> x(strided.x_size), y(strided.y_size);
  EXPECT_THROW(prim.forward<float>(x.data(), nullptr, nullptr, y.data()), std::invalid_argument);
  std::vector<double> xd(strided.x_size), wd(strided.w_size), yd(strided.y_size);
  EXPECT_THROW(prim.forward<double>(xd.data(), wd.data(), nullptr, yd.data()),
               std::invalid_argument);
}

// The inputs are read-only: the passes must not scribble on x, w, bias or dy.
TEST(Conv, InputsUnchanged) {
  const ConvCase cc = Case("inputs", 2, 6, 9, 9, 8, 3, 3).groups(2).pad(1).relu();
  for_each_isa([&](convcore::Isa) {
    for (Layout layout : {Layout::NCHW, Layout::NHWC}) {
      const Problem p = make_problem(params_of(cc, layout));
      std::mt19937 rng(5);
      const auto x = random_vector<float>(p.x_size, rng), w = random_vector<float>(p.w_size, rng),
                 b = random_vector<float>(p.K, rng), dy = random_vector<float>(p.y_size, rng);
      auto x2 = x, w2 = w, b2 = b, dy2 = dy;
      std::vector<float> y(p.y_size), dx(p.x_size), dw(p.w_size), db(p.K);
      conv2d_forward<float>(p, x2.data(), w2.data(), b2.data(), y.data(), Activation::Relu);
      conv2d_backward_data<float>(p, dy2.data(), w2.data(), dx.data());
      conv2d_backward_weight<float>(p, dy2.data(), x2.data(), dw.data());
      conv2d_backward_bias<float>(p, dy2.data(), db.data());
      EXPECT_EQ(x, x2);
      EXPECT_EQ(w, w2);
      EXPECT_EQ(b, b2);
      EXPECT_EQ(dy, dy2);
    }
  });
}

// K and Ho·Wo at and around the microkernel tile of the ISA under test, in the GEMM
// orientation of each layout: NCHW computes Kg × Ho·Wo per image (M = K, N = pixels), NHWC
// computes N·Ho·Wo × Kg (M = pixels of all images, N = K).
template <typename T>
void check_tile_edges() {
  const convcore::Blocking bl = convcore::blocking<T>();
  SCOPED_TRACE(std::string(type_name<T>()) + " " + bl.kernel_name);
  auto around = [](int64_t t) {
    std::vector<int64_t> v;
    for (int64_t x : {t - 1, t, t + 1, 2 * t, 2 * t + 1})
      if (x >= 1) v.push_back(x);
    return v;
  };
  for (Layout layout : {Layout::NCHW, Layout::NHWC}) {
    const bool nchw = layout == Layout::NCHW;
    for (int64_t k : around(nchw ? bl.mr : bl.nr))
      for (int64_t pixels : around(nchw ? bl.nr : bl.mr)) {
        // 3×3, padding 1: Ho×Wo = H×W. Two rows when the count splits evenly.
        const int64_t h = pixels % 2 == 0 && pixels > 2 ? 2 : 1;
        ConvCase cc = Case("tile_edge", nchw ? 1 : 2, 3, h, pixels / h, k, 3, 3).pad(1);
        if (k % 3 == 0) cc.relu = true;
        SCOPED_TRACE("K=" + std::to_string(k) + " Ho*Wo=" + std::to_string(pixels));
        const Problem p = make_problem(params_of(cc, layout));
        std::mt19937 rng(static_cast<unsigned>(k * 1000 + pixels));
        const auto x = random_vector<T>(p.x_size, rng), w = random_vector<T>(p.w_size, rng),
                   b = random_vector<T>(p.K, rng), dy = random_vector<T>(p.y_size, rng);
        const auto ax = abs_copy(x), aw = abs_copy(w), ab = abs_copy(b), ady = abs_copy(dy);
        const Activation act = cc.relu ? Activation::Relu : Activation::None;
        std::vector<T> y_ref(p.y_size), dx_ref(p.x_size), dw_ref(p.w_size), y_mag(p.y_size),
            dx_mag(p.x_size), dw_mag(p.w_size);
        reference::conv2d_forward<T>(p, x.data(), w.data(), b.data(), y_ref.data(), act);
        reference::conv2d_forward<T>(p, ax.data(), aw.data(), ab.data(), y_mag.data());
        reference::conv2d_backward_data<T>(p, dy.data(), w.data(), dx_ref.data());
        reference::conv2d_backward_data<T>(p, ady.data(), aw.data(), dx_mag.data());
        reference::conv2d_backward_weight<T>(p, dy.data(), x.data(), dw_ref.data());
        reference::conv2d_backward_weight<T>(p, ady.data(), ax.data(), dw_mag.data());
        Guarded<T> y(y_ref.size()), dx(dx_ref.size()), dw(dw_ref.size());
        conv2d_forward<T>(p, x.data(), w.data(), b.data(), y.data(), act);
        conv2d_backward_data<T>(p, dy.data(), w.data(), dx.data());
        conv2d_backward_weight<T>(p, dy.data(), x.data(), dw.data());
        expect_close("forward", y, y_ref, y_mag);
        expect_close("backward_data", dx, dx_ref, dx_mag);
        expect_close("backward_weight", dw, dw_ref, dw_mag);
        if (testing::Test::HasFailure()) return;
      }
  }
}

class ConvTileEdgeTest : public IsaTest {};
TEST_P(ConvTileEdgeTest, KAndPixelsAroundTheTile) {
  check_tile_edges<float>();
  check_tile_edges<double>();
}
INSTANTIATE_TEST_SUITE_P(Isa, ConvTileEdgeTest, testing::ValuesIn(all_isas()), isa_param_name);

// ---- determinism ----------------------------------------------------------------------

// Shapes big enough that 7 threads each get work (>= 2 MFLOP per thread), ragged so tiles
// are uneven, with a reduction deeper than KC.
const std::vector<ConvCase>& determinism_cases() {
  static const std::vector<ConvCase> cases = {
      Case("resnet_like", 2, 64, 20, 21, 70, 3, 3).pad(1),                     // Cg·R·S = 576
      Case("grouped_strided", 4, 48, 27, 27, 96, 3, 3).groups(3).stride(2, 2).pad(1),
      Case("pointwise", 4, 96, 15, 17, 100, 1, 1),
  };
  return cases;
}

template <typename T>
void check_deterministic(const ConvCase& cc, Layout layout) {
  SCOPED_TRACE(std::string(type_name<T>()) + (layout == Layout::NCHW ? " NCHW " : " NHWC ") + cc.name);
  const Problem p = make_problem(params_of(cc, layout));
  ASSERT_GE(p.flops(), 7 * 2e6) << "too small to be split among 7 threads";
  std::mt19937 rng(77);
  const auto x = random_vector<T>(p.x_size, rng), w = random_vector<T>(p.w_size, rng),
             b = random_vector<T>(p.K, rng), dy = random_vector<T>(p.y_size, rng);
  std::vector<T> y1, dx1, dw1, db1;
  for (int threads : {1, 2, 3, 7}) {
    SCOPED_TRACE("threads=" + std::to_string(threads));
    convcore::set_num_threads(threads);
    std::vector<T> y(p.y_size), dx(p.x_size), dw(p.w_size), db(p.K);
    conv2d_forward<T>(p, x.data(), w.data(), b.data(), y.data(), Activation::Relu);
    conv2d_backward_data<T>(p, dy.data(), w.data(), dx.data());
    conv2d_backward_weight<T>(p, dy.data(), x.data(), dw.data());
    conv2d_backward_bias<T>(p, dy.data(), db.data());
    if (threads == 1) {
      y1 = y; dx1 = dx; dw1 = dw; db1 = db;
      continue;
    }
    EXPECT_EQ(0, std::memcmp(y.data(), y1.data(), y.size() * sizeof(T)))
        << "forward: " << first_difference(y1.data(), y.data(), y.size());
    EXPECT_EQ(0, std::memcmp(dx.data(), dx1.data(), dx.size() * sizeof(T)))
        << "backward_data: " << first_difference(dx1.data(), dx.data(), dx.size());
    EXPECT_EQ(0, std::memcmp(dw.data(), dw1.data(), dw.size() * sizeof(T)))
        << "backward_weight: " << first_difference(dw1.data(), dw.data(), dw.size());
    EXPECT_EQ(0, std::memcmp(db.data(), db1.data(), db.size() * sizeof(T)))
        << "backward_bias: " << first_difference(db1.data(), db.data(), db.size());
  }
  // And the (common) result is right: these shapes cut the GEMMs into many thread tiles.
  // Many outputs, no cancellation worth the name: relative to the oracle's own norm.
  std::vector<T> y_ref(p.y_size), dx_ref(p.x_size), dw_ref(p.w_size);
  reference::conv2d_forward<T>(p, x.data(), w.data(), b.data(), y_ref.data(), Activation::Relu);
  reference::conv2d_backward_data<T>(p, dy.data(), w.data(), dx_ref.data());
  reference::conv2d_backward_weight<T>(p, dy.data(), x.data(), dw_ref.data());
  EXPECT_LE(scaled_error(y1.data(), y_ref.data(), y_ref.data(), y_ref.size()), tolerance<T>()) << "forward";
  EXPECT_LE(scaled_error(dx1.data(), dx_ref.data(), dx_ref.data(), dx_ref.size()), tolerance<T>())
      << "backward_data";
  EXPECT_LE(scaled_error(dw1.data(), dw_ref.data(), dw_ref.data(), dw_ref.size()), tolerance<T>())
      << "backward_weight";
}

class ConvDeterminismTest : public IsaTest {};

TEST_P(ConvDeterminismTest, BitwiseIdenticalAcrossThreadCounts) {
  for (const ConvCase& cc : determinism_cases())
    for (Layout layout : {Layout::NCHW, Layout::NHWC}) {
      check_deterministic<float>(cc, layout);
      check_deterministic<double>(cc, layout);
    }
}

INSTANTIATE_TEST_SUITE_P(Isa, ConvDeterminismTest, testing::ValuesIn(all_isas()), isa_param_name);

// ---- validation and the worked numbers of the CS231n notes --------------------------

// Conv2dParams for a square image/kernel, NCHW.
Conv2dParams square(int64_t in, int64_t f, int64_t stride, int64_t pad,
                    ShapeRule rule = ShapeRule::Strict) {
  Conv2dParams p;
  p.in_h = p.in_w = in;
  p.kernel_h = p.kernel_w = f;
  p.stride_h = p.stride_w = stride;
  p.pad_top = p.pad_bottom = p.pad_left = p.pad_right = pad;
  p.shape_rule = rule;
  return p;
}

int64_t out_size(int64_t in, int64_t f, int64_t stride, int64_t pad,
                 ShapeRule rule = ShapeRule::Strict) {
  return convcore::conv_output_size(in, f, stride, 1, pad, pad, rule, "width").out;
}

// What creating a primitive threw: "ShapeError", "invalid_argument" (and not a ShapeError),
// "overflow_error", "other", or "none".
std::string thrown_by(const Conv2dParams& p, std::string* message = nullptr) {
  try {
    make_problem(p);
  } catch (const convcore::ShapeError& e) {
    if (message) *message = e.what();
    return "ShapeError";
  } catch (const std::invalid_argument& e) {
    if (message) *message = e.what();
    return "invalid_argument";
  } catch (const std::overflow_error& e) {
    if (message) *message = e.what();
    return "overflow_error";
  } catch (...) {
    return "other";
  }
  return "none";
}

TEST(ConvOutputSize, WorkedNumbers) {
  EXPECT_EQ(out_size(7, 3, 1, 0), 5);
  EXPECT_EQ(out_size(7, 3, 2, 0), 3);
  EXPECT_EQ(out_size(5, 3, 1, 1), 5);
  EXPECT_EQ(out_size(5, 3, 2, 1), 3);
  EXPECT_EQ(out_size(227, 11, 4, 0), 55);  // AlexNet conv1
  EXPECT_EQ(out_size(11, 5, 2, 0), 4);     // the (11,11,4) NumPy example
  for (int64_t f : {1, 3, 5, 7}) EXPECT_EQ(out_size(32, f, 1, (f - 1) / 2), 32) << "F=" << f;
  // Dilation: effective kernel 2·(3−1)+1 = 5.
  EXPECT_EQ(convcore::conv_output_size(9, 3, 1, 2, 0, 0, ShapeRule::Strict, "height").out, 5);
}

TEST(ConvOutputSize, StrictRejectsWhatDoesNotFit) {
  // W=10, F=3, P=0, S=2: (10−3)/2+1 = 4.5.
  EXPECT_THROW(out_size(10, 3, 2, 0), convcore::ShapeError);
  std::string msg;
  EXPECT_EQ(thrown_by(square(10, 3, 2, 0), &msg), "ShapeError");
  EXPECT_NE(msg.find("4.5"), std::string::npos) << msg;
  EXPECT_NE(msg.find("crop"), std::string::npos) << msg;
  // W=5, F=3, P=1, S=3.
  EXPECT_EQ(thrown_by(square(5, 3, 3, 1)), "ShapeError");
  // AlexNet with a 224 input.
  EXPECT_EQ(thrown_by(square(224, 11, 4, 0)), "ShapeError");
  // A kernel larger than the padded input fits under no rule.
  for (ShapeRule rule : {ShapeRule::Strict, ShapeRule::Crop, ShapeRule::Pad})
    EXPECT_EQ(thrown_by(square(4, 7, 1, 1, rule)), "ShapeError");
}

TEST(ConvOutputSize, CropAndPadRules) {
  using convcore::conv_output_size;
  // W=10, F=3, S=2: crop drops the last column, pad adds one.
  auto a = conv_output_size(10, 3, 2, 1, 0, 0, ShapeRule::Crop, "width");
  EXPECT_EQ(a.out, 4);
  EXPECT_EQ(a.extra_pad_end, 0);
  a = conv_output_size(10, 3, 2, 1, 0, 0, ShapeRule::Pad, "width");
  EXPECT_EQ(a.out, 5);
  EXPECT_EQ(a.extra_pad_end, 1);
  // W=5, F=3, P=1, S=3: span 4, remainder 1.
  a = conv_output_size(5, 3, 3, 1, 1, 1, ShapeRule::Crop, "width");
  EXPECT_EQ(a.out, 2);
  a = conv_output_size(5, 3, 3, 1, 1, 1, ShapeRule::Pad, "width");
  EXPECT_EQ(a.out, 3);
  EXPECT_EQ(a.extra_pad_end, 2);
  // AlexNet at 224: zero-padding the rest (3 pixels) gives 55 again; crop gives 54.
  a = conv_output_size(224, 11, 4, 1, 0, 0, ShapeRule::Pad, "width");
  EXPECT_EQ(a.out, 55);
  EXPECT_EQ(a.extra_pad_end, 3);
  EXPECT_EQ(conv_output_size(224, 11, 4, 1, 0, 0, ShapeRule::Crop, "width").out, 54);
  // Divisible sizes are the same under every rule.
  for (ShapeRule rule : {ShapeRule::Strict, ShapeRule::Crop, ShapeRule::Pad}) {
    a = conv_output_size(227, 11, 4, 1, 0, 0, rule, "width");
    EXPECT_EQ(a.out, 55);
    EXPECT_EQ(a.extra_pad_end, 0);
  }
}

TEST(Primitive, ResolvesShapesAndPadding) {
  // Pad rule grows the bottom/right padding in the plan.
  Conv2dParams prm = square(10, 3, 2, 0, ShapeRule::Pad);
  prm.in_h = 5;
  prm.stride_h = 3;
  prm.pad_top = prm.pad_bottom = 1;
  Problem p = make_problem(prm);
  EXPECT_EQ(p.Ho, 3);
  EXPECT_EQ(p.Wo, 5);
  EXPECT_EQ(p.pad_t, 1);
  EXPECT_EQ(p.pad_b, 1 + 2);
  EXPECT_EQ(p.pad_l, 0);
  EXPECT_EQ(p.pad_r, 0 + 1);
  prm.shape_rule = ShapeRule::Crop;
  p = make_problem(prm);
  EXPECT_EQ(p.Ho, 2);
  EXPECT_EQ(p.Wo, 4);
  EXPECT_EQ(p.pad_b, 1);
  EXPECT_EQ(p.pad_r, 0);

  // AlexNet conv1: 227×227×3, F=11, S=4, K=96 → 55×55×96; 34,848 weights + 96 biases.
  Conv2dParams alex = square(227, 11, 4, 0);
  alex.in_channels = 3;
  alex.out_channels = 96;
  for (Layout layout : {Layout::NCHW, Layout::NHWC}) {
    alex.layout = layout;
    p = make_problem(alex);
    EXPECT_EQ(p.Ho, 55);
    EXPECT_EQ(p.Wo, 55);
    EXPECT_EQ(p.K, 96);
    EXPECT_EQ(p.w_size, 34848);
    EXPECT_EQ(p.w_size + p.K, 34944);
    // Without parameter sharing: one weight set (+ bias) per output element.
    EXPECT_EQ(p.y_size * (p.CgRS() + 1), 105705600);
  }

  // Groups and strides: NHWC weights are (K, R, S, C/groups).
  Conv2dParams g = square(8, 3, 1, 1);
  g.in_channels = 6;
  g.out_channels = 4;
  g.groups = 2;
  g.batch = 3;
  g.layout = Layout::NHWC;
  p = make_problem(g);
  EXPECT_EQ(p.Cg, 3);
  EXPECT_EQ(p.Kg, 2);
  EXPECT_EQ(p.w_size, 4 * 3 * 3 * 3);
  EXPECT_EQ(p.x_size, 3 * 8 * 8 * 6);
  EXPECT_EQ(p.y_size, 3 * 8 * 8 * 4);
}

TEST(Primitive, RejectsBadHyperparameters) {
  auto with = [](auto edit) {
    Conv2dParams p = square(8, 3, 1, 1);
    p.in_channels = 4;
    p.out_channels = 6;
    edit(p);
    return thrown_by(p);
  };
  EXPECT_EQ(with([](Conv2dParams&) {}), "none");
  EXPECT_EQ(with([](Conv2dParams& p) { p.stride_h = 0; }), "invalid_argument");
  EXPECT_EQ(with([](Conv2dParams& p) { p.stride_w = 0; }), "invalid_argument");
  EXPECT_EQ(with([](Conv2dParams& p) { p.stride_w = -1; }), "invalid_argument");
  EXPECT_EQ(with([](Conv2dParams& p) { p.dilation_h = 0; }), "invalid_argument");
  EXPECT_EQ(with([](Conv2dParams& p) { p.pad_top = -1; }), "invalid_argument");
  EXPECT_EQ(with([](Conv2dParams& p) { p.pad_right = -2; }), "invalid_argument");
  EXPECT_EQ(with([](Conv2dParams& p) { p.kernel_w = 0; }), "invalid_argument");
  EXPECT_EQ(with([](Conv2dParams& p) { p.groups = 0; }), "invalid_argument");
  EXPECT_EQ(with([](Conv2dParams& p) { p.groups = 3; }), "invalid_argument");  // 4 % 3
  EXPECT_EQ(with([](Conv2dParams& p) { p.groups = 4; }), "invalid_argument");  // 6 % 4
  EXPECT_EQ(with([](Conv2dParams& p) { p.groups = 2; }), "none");
  EXPECT_EQ(with([](Conv2dParams& p) { p.in_channels = 0; }), "invalid_argument");
  EXPECT_EQ(with([](Conv2dParams& p) { p.out_channels = 0; }), "invalid_argument");
  EXPECT_EQ(with([](Conv2dParams& p) { p.batch = -1; }), "invalid_argument");
  EXPECT_EQ(with([](Conv2dParams& p) { p.batch = 0; }), "none");
  EXPECT_EQ(with([](Conv2dParams& p) {
              p.batch = int64_t(1) << 40;
              p.in_channels = int64_t(1) << 20;
              p.out_channels = 1;
            }),
            "overflow_error");

  std::string msg;
  Conv2dParams p = square(8, 3, 1, 1);
  p.stride_h = 0;
  thrown_by(p, &msg);
  EXPECT_NE(msg.find("stride"), std::string::npos) << msg;
  p = square(8, 3, 1, 1);
  p.in_channels = 4;
  p.groups = 3;
  thrown_by(p, &msg);
  EXPECT_NE(msg.find("groups"), std::string::npos) << msg;
}

// The (11,11,4) example of the CS231n notes: V[i,j,d] = sum(X[i*S:i*S+F, j*S:j*S+F, :] * W[d]) + b[d]
// written out here independently of the library's reference.
TEST(Conv, SeedNumpyExampleNHWC) {
  Conv2dParams prm = square(11, 5, 2, 0);
  prm.in_channels = 4;
  prm.out_channels = 3;
  prm.layout = Layout::NHWC;
  const Problem p = make_problem(prm);
  ASSERT_EQ(p.Ho, 4);
  ASSERT_EQ(p.Wo, 4);
  std::mt19937 rng(11);
  const auto x = random_vector<double>(p.x_size, rng);  // (11, 11, 4)
  const auto w = random_vector<double>(p.w_size, rng);  // (3, 5, 5, 4)
  const auto b = random_vector<double>(3, rng);
  std::vector<double> want(p.y_size), magnitude(p.y_size);
  for (int i = 0; i < 4; ++i)
    for (int j = 0; j < 4; ++j)
      for (int d = 0; d < 3; ++d) {
        long double s = b[d], mag = std::fabs(b[d]);
        for (int u = 0; u < 5; ++u)
          for (int v = 0; v < 5; ++v)
            for (int c = 0; c < 4; ++c)
            {
              const long double t = (long double)x[((i * 2 + u) * 11 + (j * 2 + v)) * 4 + c] *
                                    w[((d * 5 + u) * 5 + v) * 4 + c];
              s += t;
              mag += std::fabs(t);
            }
        want[(i * 4 + j) * 3 + d] = double(s);
        magnitude[(i * 4 + j) * 3 + d] = double(mag);
      }
  for_each_isa([&](convcore::Isa) {
    Guarded<double> y(p.y_size);
    conv2d_forward<double>(p, x.data(), w.data(), b.data(), y.data());
    expect_close("forward", y, want, magnitude);
  });
}

// Winograd F(4×4, 3×3) (Algorithm::Winograd): every 3×3 stride-1 table shape, both
// layouts and dtypes, every ISA, against the oracle within the documented bound (float32
// 1e-4, float64 1e-12 of the error scale); prepacked weights give the per-call result
// bitwise, and so does every thread count.
template <typename T>
void check_winograd(const ConvCase& cc, Layout layout) {
  SCOPED_TRACE(std::string(type_name<T>()) + (layout == Layout::NCHW ? " NCHW" : " NHWC"));
  const Problem p = make_problem(params_of(cc, layout));
  convcore::Conv2dDesc desc{convcore::OpKind::Conv2d, p.params, convcore::data_type_of<T>()};
  desc.algorithm = convcore::Algorithm::Winograd;
  std::mt19937 rng(static_cast<unsigned>(p.x_size * 13 + p.w_size + p.K));
  const auto x = random_vector<T>(static_cast<std::size_t>(p.x_size), rng);
  const auto w = random_vector<T>(static_cast<std::size_t>(p.w_size), rng);
  const auto b = random_vector<T>(static_cast<std::size_t>(p.K), rng);
  const T* bias = cc.bias ? b.data() : nullptr;
  const Activation act = cc.relu ? Activation::Relu : Activation::None;
  std::vector<T> y_ref(p.y_size), y_mag(p.y_size);
  reference::conv2d_forward<T>(p, x.data(), w.data(), bias, y_ref.data(), act);
  const auto ax = abs_copy(x), aw = abs_copy(w), ab = abs_copy(b);
  reference::conv2d_forward<T>(p, ax.data(), aw.data(), cc.bias ? ab.data() : nullptr,
                               y_mag.data());
  const double bound = sizeof(T) == 4 ? 1e-4 : 1e-12;
  for_each_isa([&](convcore::Isa) {
    RuntimeGuard threads_guard;
    convcore::Conv2dPrimitive prim(desc);
    ASSERT_EQ(std::string(prim.implementation(convcore::Pass::Forward)).rfind("winograd_f4x3", 0), 0u);
    Guarded<T> y(y_ref.size()), y2(y_ref.size()), y3(y_ref.size());
    prim.forward(x.data(), w.data(), bias, y.data(), act);
    const double err = scaled_error(y.data(), y_ref.data(), y_mag.data(), y_ref.size());
    EXPECT_LE(err, bound) << cc.name;
    EXPECT_TRUE(y.guard_intact()) << "wrote past the end of y";
    prim.set_weights(w.data());
    convcore::set_num_threads(3);
    prim.forward<T>(x.data(), nullptr, bias, y2.data(), act);
    EXPECT_EQ(0, std::memcmp(y.data(), y2.data(), y_ref.size() * sizeof(T)))
        << "prepacked, 3 threads: " << first_difference(y.data(), y2.data(), y_ref.size());
    convcore::set_num_threads(1);
    prim.forward<T>(x.data(), nullptr, bias, y3.data(), act);
    EXPECT_EQ(0, std::memcmp(y.data(), y3.data(), y_ref.size() * sizeof(T)))
        << "1 thread: " << first_difference(y.data(), y3.data(), y_ref.size());
  });
}

TEST(Winograd, TableShapesMatchReference) {
  int covered = 0;
  for (const ConvCase& cc : conv_cases()) {
    const Conv2dParams prm = params_of(cc, Layout::NCHW);
    if (prm.kernel_h != 3 || prm.kernel_w != 3 || prm.stride_h != 1 || prm.stride_w != 1 ||
        prm.dilation_h != 1 || prm.dilation_w != 1)
      continue;
    ++covered;
    for (Layout layout : {Layout::NCHW, Layout::NHWC}) {
      check_winograd<float>(cc, layout);
      check_winograd<double>(cc, layout);
    }
  }
  EXPECT_GT(covered, 2);
}

TEST(Winograd, RejectedWhereItCannotCompute) {
  Conv2dParams prm = params_of(Case("s2", 1, 3, 9, 9, 4, 3, 3).stride(2, 2), Layout::NCHW);
  prm.shape_rule = ShapeRule::Crop;
  convcore::Conv2dDesc desc{convcore::OpKind::Conv2d, prm, convcore::DataType::Float32};
  desc.algorithm = convcore::Algorithm::Winograd;
  try {
    convcore::Conv2dPrimitive prim(desc);
    ADD_FAILURE() << "Winograd on a stride-2 layer did not throw";
  } catch (const std::invalid_argument& e) {
    EXPECT_NE(std::string(e.what()).find("stride 1 only"), std::string::npos) << e.what();
  }
  EXPECT_STREQ(convcore::algorithm_name(convcore::Algorithm::Winograd), "winograd");
  EXPECT_STREQ(convcore::algorithm_name(convcore::Algorithm::Exact), "exact");
}

}  // namespace
}  // namespace convcore_test
