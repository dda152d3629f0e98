// The standard layer suite: forward, backward-data and backward-weight of each
// layer, fp32, NCHW, shape_rule crop, with a FLOP/s counter of 2·N·K·Ho·Wo·(C/groups)·R·S
// per pass.
//
// The suite is a CSV file: '#' comment lines and blank lines are skipped, every other line
// is `name,N,C,H,W,K,R,S,stride,pad`. Its path is CONVCORE_LAYERS (environment) or the
// CONVCORE_LAYERS_CSV compile definition.
#include <benchmark/benchmark.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <memory>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

#include "bench_common.hpp"
#include "convcore/conv2d.hpp"

#ifndef CONVCORE_LAYERS_CSV
#define CONVCORE_LAYERS_CSV "layers.csv"
#endif

namespace convcore_bench {
namespace {

struct Layer {
  std::string name;
  int64_t N, C, H, W, K, R, S, stride, pad;
};

std::string trim(const std::string& s) {
  const auto b = s.find_first_not_of(" \t\r");
  if (b == std::string::npos) return "";
  const auto e = s.find_last_not_of(" \t\r");
  return s.substr(b, e - b + 1);
}

// Parses the suite; throws std::runtime_error naming the file and line on bad input.
std::vector<Layer> read_layers(const std::string& path) {
  std::ifstream in(path);
  if (!in) throw std::runtime_error("cannot open the layer suite '" + path + "' (set CONVCORE_LAYERS)");
  std::vector<Layer> layers;
  std::string line;
  int lineno = 0;
  while (std::getline(in, line)) {
    ++lineno;
    line = trim(line);
    if (line.empty() || line[0] == '#') continue;
    std::vector<std::string> f;
    std::stringstream ss(line);
    std::string cell;
    while (std::getline(ss, cell, ',')) f.push_back(trim(cell));
    auto fail = [&](const std::string& why) {
      return std::runtime_error(path + ":" + std::to_string(lineno) + ": " + why +
                                " (expected name,N,C,H,W,K,R,S,stride,pad): '" + line + "'");
    };
    if (f.size() != 10) throw fail("expected 10 fields, got " + std::to_string(f.size()));
    if (f[1] == "N") continue;  // an uncommented header line
    Layer l;
    l.name = f[0];
    int64_t* dst[9] = {&l.N, &l.C, &l.H, &l.W, &l.K, &l.R, &l.S, &l.stride, &l.pad};
    for (int i = 0; i < 9; ++i) {
      char* end = nullptr;
      const long long v = std::strtoll(f[i + 1].c_str(), &end, 10);
      if (f[i + 1].empty() || *end != '\0') throw fail("field " + std::to_string(i + 2) + " is not an integer");
      *dst[i] = v;
    }
    layers.push_back(l);
  }
  return layers;
}

convcore::Conv2dParams params_of(const Layer& l) {
  convcore::Conv2dParams p;
  p.batch = l.N;
  p.in_channels = l.C;
  p.in_h = l.H;
  p.in_w = l.W;
  p.out_channels = l.K;
  p.kernel_h = l.R;
  p.kernel_w = l.S;
  p.stride_h = p.stride_w = l.stride;
  p.pad_top = p.pad_bottom = p.pad_left = p.pad_right = l.pad;
  p.layout = convcore::Layout::NCHW;
  p.shape_rule = convcore::ShapeRule::Crop;
  return p;
}

using convcore::Pass;
const char* short_name(Pass p) {
  switch (p) {
    case Pass::Forward: return "fwd";
    case Pass::BackwardData: return "bwd_data";
    default: return "bwd_weight";
  }
}

// Buffers are allocated and filled once per benchmark run, outside the timed loop.
// The primitive is created per run (after any ISA change) and packs the weights per call,
// as a functional call does.
void bench_pass(benchmark::State& state, const convcore::Conv2dDesc& desc, Pass pass) {
  const convcore::Conv2dPrimitive conv(desc);
  const convcore::Conv2dShape& sh = conv.shape();
  const auto x = random_data<float>(sh.input_elements, 1);
  const auto w = random_data<float>(sh.weight_elements, 2);
  const auto bias = random_data<float>(sh.bias_elements, 3);
  const auto dy = random_data<float>(sh.output_elements, 4);
  std::vector<float> out(static_cast<std::size_t>(pass == Pass::Forward ? sh.output_elements
                                                  : pass == Pass::BackwardData
                                                      ? sh.input_elements
                                                      : sh.weight_elements));
  for (auto _ : state) {
    switch (pass) {
      case Pass::Forward:
        conv.forward<float>(x.data(), w.data(), bias.data(), out.data());
        break;
      case Pass::BackwardData:
        conv.backward_data<float>(dy.data(), w.data(), out.data());
        break;
      case Pass::BackwardWeight:
        conv.backward_weight<float>(dy.data(), x.data(), out.data());
        break;
    }
    benchmark::DoNotOptimize(out.data());
    benchmark::ClobberMemory();
  }
  state.SetLabel(conv.implementation(pass));
  state.counters["FLOPS"] = benchmark::Counter(sh.flops, benchmark::Counter::kIsIterationInvariantRate);
}

}  // namespace

bool register_conv_benchmarks() {
  const char* env = std::getenv("CONVCORE_LAYERS");
  const std::string path = env && *env ? env : CONVCORE_LAYERS_CSV;
  std::vector<Layer> layers;
  try {
    layers = read_layers(path);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "convcore_bench: %s\n", e.what());
    return false;
  }
  for (const Layer& l : layers) {
    convcore::Conv2dDesc desc;
    desc.params = params_of(l);
    desc.dtype = convcore::DataType::Float32;
    try {
      convcore::Conv2dPrimitive check(desc);  // validates the layer before registering it
    } catch (const std::exception& e) {
      std::fprintf(stderr, "convcore_bench: layer '%s' in %s: %s\n", l.name.c_str(), path.c_str(), e.what());
      return false;
    }
    for (Pass pass : {Pass::Forward, Pass::BackwardData, Pass::BackwardWeight}) {
      const std::string name = std::string("conv/") + short_name(pass) + "/" + l.name;
      benchmark::RegisterBenchmark(name.c_str(),
                                   [desc, pass](benchmark::State& st) { bench_pass(st, desc, pass); })
          ->Unit(benchmark::kMillisecond)
          ->UseRealTime();
    }
  }
  return true;
}

}  // namespace convcore_bench
