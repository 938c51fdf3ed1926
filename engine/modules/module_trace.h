// Which FFN modules served a request (traceability, CONCEPTS.md §1): per layer, how many of its
// tokens used each module, and how much of the FFN ran. The same shape accumulates the server-wide
// per-module usage counters.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace brickserve {

struct ModuleTrace {
  int num_layers = 0;
  int num_modules = 0;
  std::vector<uint64_t> counts;   // [layer * num_modules + m]: tokens that used module m of the layer
  uint64_t tokens = 0;            // tokens that went through the FFN stack
  uint64_t neurons_computed = 0;  // FFN neurons computed, over every layer and token
  uint64_t neurons_total = 0;     // what the dense FFN would have computed

  void Reset(int layers, int modules) {
    num_layers = layers;
    num_modules = modules;
    counts.assign(static_cast<size_t>(layers) * modules, 0);
    tokens = neurons_computed = neurons_total = 0;
  }
  bool empty() const { return counts.empty(); }
  uint64_t& at(int layer, int module) { return counts[static_cast<size_t>(layer) * num_modules + module]; }
  uint64_t at(int layer, int module) const { return counts[static_cast<size_t>(layer) * num_modules + module]; }
  // The fraction of FFN neurons computed (1 when dense).
  double density() const { return neurons_total ? static_cast<double>(neurons_computed) / neurons_total : 1.0; }
  // Adds `other` (same shape, or this one empty).
  void Merge(const ModuleTrace& other) {
    if (other.empty()) return;
    if (empty()) Reset(other.num_layers, other.num_modules);
    if (other.counts.size() != counts.size()) return;
    for (size_t i = 0; i < counts.size(); ++i) counts[i] += other.counts[i];
    tokens += other.tokens;
    neurons_computed += other.neurons_computed;
    neurons_total += other.neurons_total;
  }
};

}  // namespace brickserve
