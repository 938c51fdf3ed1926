// Bad model directories: each defect gets its own clear error, never a crash.
#include <filesystem>
#include <fstream>
#include <map>
#include <random>

#include "engine/model/llama_model.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"

namespace brickserve {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

struct FakeTensor {
  std::string dtype = "F32";
  std::vector<int64_t> shape;
};

// Writes a small, valid Llama checkpoint; tests then break one thing at a time.
class ModelDir {
 public:
  ModelDir() {
    dir_ = fs::temp_directory_path() / ("bs_model_" + std::to_string(std::random_device{}()));
    fs::create_directories(dir_);
    config_ = {{"architectures", {"LlamaForCausalLM"}}, {"hidden_size", 16}, {"intermediate_size", 32},
               {"num_hidden_layers", 1}, {"num_attention_heads", 2}, {"num_key_value_heads", 1},
               {"vocab_size", 20}, {"max_position_embeddings", 64}, {"rms_norm_eps", 1e-5},
               {"hidden_act", "silu"}, {"tie_word_embeddings", false}};
    auto& t = tensors_;
    t["model.embed_tokens.weight"] = {"F32", {20, 16}};
    t["lm_head.weight"] = {"F32", {20, 16}};
    t["model.norm.weight"] = {"F32", {16}};
    const std::string p = "model.layers.0.";
    t[p + "input_layernorm.weight"] = {"F32", {16}};
    t[p + "post_attention_layernorm.weight"] = {"F32", {16}};
    t[p + "self_attn.q_proj.weight"] = {"F32", {16, 16}};
    t[p + "self_attn.k_proj.weight"] = {"F32", {8, 16}};
    t[p + "self_attn.v_proj.weight"] = {"F32", {8, 16}};
    t[p + "self_attn.o_proj.weight"] = {"F32", {16, 16}};
    t[p + "mlp.gate_proj.weight"] = {"F32", {32, 16}};
    t[p + "mlp.up_proj.weight"] = {"F32", {32, 16}};
    t[p + "mlp.down_proj.weight"] = {"F32", {16, 32}};
  }
  ~ModelDir() { fs::remove_all(dir_); }

  json& config() { return config_; }
  std::map<std::string, FakeTensor>& tensors() { return tensors_; }
  std::string path() const { return dir_.string(); }
  std::string file(const std::string& name) const { return (dir_ / name).string(); }

  // Writes config.json and model.safetensors (zeros, with element sizes from dtype).
  void Write() {
    std::ofstream(file("config.json")) << config_.dump();
    WriteSafetensors(file("model.safetensors"), tensors_);
  }

  static void WriteSafetensors(const std::string& path, const std::map<std::string, FakeTensor>& tensors) {
    json header = json::object();
    uint64_t offset = 0;
    for (const auto& [name, t] : tensors) {
      uint64_t n = 1;
      for (auto d : t.shape) n *= d;
      const uint64_t bytes = n * (t.dtype == "F32" || t.dtype == "I32" ? 4 : t.dtype == "F64" ? 8 : 2);
      header[name] = {{"dtype", t.dtype}, {"shape", t.shape}, {"data_offsets", {offset, offset + bytes}}};
      offset += bytes;
    }
    std::string h = header.dump();
    h.append((8 - h.size() % 8) % 8, ' ');
    std::ofstream out(path, std::ios::binary);
    const uint64_t len = h.size();
    out.write(reinterpret_cast<const char*>(&len), 8);
    out << h;
    std::string zeros(offset, '\0');
    out << zeros;
  }

  absl::Status Load() {
    auto config = LoadModelConfig(path());
    if (!config.ok()) return config.status();
    auto device = CreateDevice({"cpu", 1});
    if (!device.ok()) return device.status();
    return LlamaModel::Load(path(), *config, device->get(), 8).status();
  }

 private:
  fs::path dir_;
  json config_;
  std::map<std::string, FakeTensor> tensors_;
};

void ExpectError(const absl::Status& s, absl::StatusCode code, const std::string& fragment) {
  EXPECT_EQ(s.code(), code) << s;
  EXPECT_NE(s.message().find(fragment), std::string::npos) << "message \"" << s.message() << "\" lacks \"" << fragment << "\"";
}

TEST(ModelLoading, ValidDirectoryLoads) {
  ModelDir d;
  d.Write();
  EXPECT_TRUE(d.Load().ok()) << d.Load();
}

TEST(ModelLoading, MissingDirectory) {
  ExpectError(LoadModelConfig("/nonexistent/model").status(), absl::StatusCode::kNotFound, "/nonexistent/model");
}

TEST(ModelLoading, MissingConfig) {
  ModelDir d;
  d.Write();
  fs::remove(d.file("config.json"));
  ExpectError(d.Load(), absl::StatusCode::kNotFound, "config.json");
}

TEST(ModelLoading, MissingWeights) {
  ModelDir d;
  d.Write();
  fs::remove(d.file("model.safetensors"));
  ExpectError(d.Load(), absl::StatusCode::kNotFound, "no model.safetensors");
}

TEST(ModelLoading, MalformedConfigJson) {
  ModelDir d;
  d.Write();
  std::ofstream(d.file("config.json")) << "{\"architectures\": [";
  ExpectError(d.Load(), absl::StatusCode::kInvalidArgument, "config.json: not a JSON object");
}

TEST(ModelLoading, UnknownArchitecture) {
  ModelDir d;
  d.config()["architectures"] = {"GPT2LMHeadModel"};
  d.Write();
  ExpectError(d.Load(), absl::StatusCode::kInvalidArgument, "architectures \"GPT2LMHeadModel\" is not supported");
}

TEST(ModelLoading, UnsupportedActivationAndRopeScaling) {
  ModelDir d;
  d.config()["hidden_act"] = "gelu";
  d.Write();
  ExpectError(d.Load(), absl::StatusCode::kInvalidArgument, "hidden_act \"gelu\"");
  d.config()["hidden_act"] = "silu";
  d.config()["rope_scaling"] = {{"rope_type", "yarn"}, {"factor", 4.0}};
  d.Write();
  ExpectError(d.Load(), absl::StatusCode::kInvalidArgument, "rope_scaling.rope_type \"yarn\"");
}

TEST(ModelLoading, InconsistentHeads) {
  ModelDir d;
  d.config()["num_key_value_heads"] = 3;
  d.Write();
  ExpectError(d.Load(), absl::StatusCode::kInvalidArgument, "num_key_value_heads");
}

TEST(ModelLoading, WrongDtype) {
  ModelDir d;
  d.tensors()["model.norm.weight"].dtype = "F64";
  d.Write();
  ExpectError(d.Load(), absl::StatusCode::kInvalidArgument, "dtype \"F64\" is not supported");
}

TEST(ModelLoading, ShapeMismatch) {
  ModelDir d;
  d.tensors()["model.layers.0.self_attn.k_proj.weight"].shape = {16, 16};
  d.Write();
  ExpectError(d.Load(), absl::StatusCode::kInvalidArgument,
              "tensor \"model.layers.0.self_attn.k_proj.weight\" has shape [16, 16] but config.json implies [8, 16]");
}

TEST(ModelLoading, MissingTensor) {
  ModelDir d;
  d.tensors().erase("model.layers.0.mlp.up_proj.weight");
  d.Write();
  ExpectError(d.Load(), absl::StatusCode::kNotFound, "model.layers.0.mlp.up_proj.weight");
}

TEST(ModelLoading, MissingLmHeadWithoutTiedEmbeddings) {
  ModelDir d;
  d.tensors().erase("lm_head.weight");
  d.Write();
  ExpectError(d.Load(), absl::StatusCode::kInvalidArgument, "tie_word_embeddings");
  d.config()["tie_word_embeddings"] = true;
  d.Write();
  EXPECT_TRUE(d.Load().ok());
}

TEST(ModelLoading, TruncatedSafetensors) {
  ModelDir d;
  d.Write();
  const auto size = fs::file_size(d.file("model.safetensors"));
  fs::resize_file(d.file("model.safetensors"), size - 100);
  ExpectError(d.Load(), absl::StatusCode::kDataLoss, "truncated");
  fs::resize_file(d.file("model.safetensors"), 5);
  ExpectError(d.Load(), absl::StatusCode::kDataLoss, "too short");
}

TEST(ModelLoading, HeaderLengthBeyondFile) {
  ModelDir d;
  d.Write();
  std::fstream f(d.file("model.safetensors"), std::ios::in | std::ios::out | std::ios::binary);
  const uint64_t huge = 1ull << 40;
  f.write(reinterpret_cast<const char*>(&huge), 8);
  f.close();
  ExpectError(d.Load(), absl::StatusCode::kDataLoss, "header length");
}

TEST(ModelLoading, InconsistentDataOffsets) {
  ModelDir d;
  d.Write();
  // Rewrite with a header whose offsets do not cover the shape.
  std::ifstream in(d.file("model.safetensors"), std::ios::binary);
  uint64_t len = 0;
  in.read(reinterpret_cast<char*>(&len), 8);
  std::string header(len, '\0');
  in.read(header.data(), len);
  std::string body((std::istreambuf_iterator<char>(in)), {});
  in.close();
  auto j = json::parse(header);
  j["model.norm.weight"]["data_offsets"][1] = j["model.norm.weight"]["data_offsets"][0].get<uint64_t>() + 4;
  std::string h = j.dump();
  h.append((8 - h.size() % 8) % 8, ' ');
  std::ofstream out(d.file("model.safetensors"), std::ios::binary | std::ios::trunc);
  len = h.size();
  out.write(reinterpret_cast<const char*>(&len), 8);
  out << h << body;
  out.close();
  ExpectError(d.Load(), absl::StatusCode::kInvalidArgument, "hold 4 bytes but shape [16] of F32 needs 64");
}

TEST(ModelLoading, ShardedIndexPointingAtWrongShard) {
  ModelDir d;
  d.Write();
  fs::rename(d.file("model.safetensors"), d.file("model-00001-of-00001.safetensors"));
  json index = {{"weight_map", json::object()}};
  for (const auto& [name, t] : d.tensors()) index["weight_map"][name] = "model-00001-of-00001.safetensors";
  std::ofstream(d.file("model.safetensors.index.json")) << index.dump();
  EXPECT_TRUE(d.Load().ok()) << d.Load();
  index["weight_map"]["model.norm.weight"] = "model-00002-of-00002.safetensors";
  std::ofstream(d.file("model.safetensors.index.json")) << index.dump();
  ExpectError(d.Load(), absl::StatusCode::kNotFound, "model-00002-of-00002.safetensors");
}

TEST(ModelConfig, Qwen2ImpliesQkvBiasAndGenerationConfigEos) {
  auto c = ParseModelConfig(R"({"architectures":["Qwen2ForCausalLM"],"hidden_size":8,"intermediate_size":16,
      "num_hidden_layers":1,"num_attention_heads":2,"vocab_size":10,"eos_token_id":3})",
                            R"({"eos_token_id":[4,5]})");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_TRUE(c->qkv_bias);
  EXPECT_EQ(c->num_kv_heads, 2);
  EXPECT_EQ(c->head_dim, 4);
  EXPECT_EQ(c->eos_token_ids, (std::vector<int32_t>{4, 5}));
}

TEST(ModelConfig, Llama3RopeScalingKeepsHighFrequencies) {
  auto c = ParseModelConfig(R"({"architectures":["LlamaForCausalLM"],"hidden_size":128,"intermediate_size":16,
      "num_hidden_layers":1,"num_attention_heads":1,"vocab_size":10,"rope_theta":500000.0,
      "rope_scaling":{"rope_type":"llama3","factor":8.0,"low_freq_factor":1.0,"high_freq_factor":4.0,
                      "original_max_position_embeddings":8192}})",
                            "");
  ASSERT_TRUE(c.ok()) << c.status();
  const auto inv = c->RopeInvFreq();
  EXPECT_FLOAT_EQ(inv[0], 1.0f);                                       // highest frequency: unscaled
  EXPECT_NEAR(inv.back(), std::pow(500000.0, -126.0 / 128) / 8, 1e-12);  // lowest: divided by factor
}

// transformers 5 writes one "rope_parameters" object (rope_theta inside): the same frequencies as
// the transformers 4 fields, and errors name the field the file used.
TEST(ModelConfig, RopeParametersOfTransformers5MatchRopeThetaAndScaling) {
  const std::string base = R"({"architectures":["LlamaForCausalLM"],"hidden_size":128,"intermediate_size":16,
      "num_hidden_layers":1,"num_attention_heads":1,"vocab_size":10,)";
  auto v4 = ParseModelConfig(base + R"("rope_theta":500000.0,
      "rope_scaling":{"rope_type":"llama3","factor":8.0,"low_freq_factor":1.0,"high_freq_factor":4.0,
                      "original_max_position_embeddings":8192}})",
                             "");
  auto v5 = ParseModelConfig(base + R"("rope_parameters":{"rope_type":"llama3","rope_theta":500000.0,"factor":8.0,
      "low_freq_factor":1.0,"high_freq_factor":4.0,"original_max_position_embeddings":8192}})",
                             "");
  ASSERT_TRUE(v4.ok()) << v4.status();
  ASSERT_TRUE(v5.ok()) << v5.status();
  EXPECT_EQ(v5->rope_theta, 500000.0);
  EXPECT_EQ(v5->RopeInvFreq(), v4->RopeInvFreq());
  auto plain = ParseModelConfig(base + R"("rope_parameters":{"rope_type":"default","rope_theta":1000000.0}})", "");
  ASSERT_TRUE(plain.ok()) << plain.status();
  EXPECT_EQ(plain->rope_theta, 1000000.0);
  EXPECT_EQ(plain->rope_scaling.type, RopeScaling::Type::kNone);
  auto bad = ParseModelConfig(base + R"("rope_parameters":{"rope_type":"yarn","rope_theta":10000.0,"factor":4.0}})", "");
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.status().message().find("rope_parameters.rope_type \"yarn\""), std::string::npos) << bad.status();
}

}  // namespace
}  // namespace brickserve
