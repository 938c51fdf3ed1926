#include "server/metrics/text_serializer.h"

#include <charconv>
#include <cmath>

namespace brickserve::metrics {
namespace {

std::string FormatValue(double v) {
  if (std::isnan(v)) return "NaN";
  if (std::isinf(v)) return v > 0 ? "+Inf" : "-Inf";
  // The shortest text that reads back as the same double ("0.005", not "0.0050000000000000001").
  char buf[32];
  const auto end = std::to_chars(buf, buf + sizeof(buf), v).ptr;
  return std::string(buf, end);
}

// HELP text escapes backslash and newline; label values also the double quote.
std::string Escape(const std::string& s, bool quote) {
  std::string out;
  for (char c : s) {
    if (c == '\\') out += "\\\\";
    else if (c == '\n') out += "\\n";
    else if (quote && c == '"') out += "\\\"";
    else out += c;
  }
  return out;
}

void WriteSample(std::string& out, const std::string& name, const Labels& labels, const char* extra_key,
                 const std::string& extra_value, double value) {
  out += name;
  if (!labels.empty() || extra_key != nullptr) {
    out += '{';
    bool first = true;
    for (const auto& [k, v] : labels) {
      if (!first) out += ',';
      first = false;
      out += k + "=\"" + Escape(v, true) + '"';
    }
    if (extra_key != nullptr) {
      if (!first) out += ',';
      out += std::string(extra_key) + "=\"" + extra_value + '"';
    }
    out += '}';
  }
  out += ' ' + FormatValue(value) + '\n';
}

const char* TypeName(MetricType t) {
  switch (t) {
    case MetricType::kCounter: return "counter";
    case MetricType::kGauge: return "gauge";
    case MetricType::kHistogram: return "histogram";
  }
  return "untyped";
}

}  // namespace

std::string SerializeText(const std::vector<MetricFamily>& families) {
  std::string out;
  for (const MetricFamily& f : families) {
    if (f.metrics.empty()) continue;  // a family without samples says nothing
    out += "# HELP " + f.name + ' ' + Escape(f.help, false) + '\n';
    out += "# TYPE " + f.name + ' ' + TypeName(f.type) + '\n';
    for (const ClientMetric& m : f.metrics) {
      if (f.type != MetricType::kHistogram) {
        WriteSample(out, f.name, m.labels, nullptr, "", m.value);
        continue;
      }
      for (const auto& [bound, count] : m.buckets) {
        WriteSample(out, f.name + "_bucket", m.labels, "le", FormatValue(bound), static_cast<double>(count));
      }
      WriteSample(out, f.name + "_sum", m.labels, nullptr, "", m.sample_sum);
      WriteSample(out, f.name + "_count", m.labels, nullptr, "", static_cast<double>(m.sample_count));
    }
  }
  return out;
}

}  // namespace brickserve::metrics
