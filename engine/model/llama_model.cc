#include "engine/model/llama_model.h"

#include <algorithm>
#include <cmath>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "engine/model/safetensors.h"
#include "engine/util/status_macros.h"

namespace brickserve {

struct LayerWeights {
  Weight input_norm, post_attention_norm;
  Weight q, k, v, o, q_bias, k_bias, v_bias;
  Weight gate, up, down;
};

struct LlamaWeights {
  Weight embed, final_norm, lm_head, rope_inv_freq;
  std::vector<LayerWeights> layers;
};

namespace {

// Fetches a tensor, checks its shape against what config.json implies, and uploads it.
class WeightBinder {
 public:
  WeightBinder(const CheckpointTensors& ckpt, Device* device) : ckpt_(ckpt), device_(device) {}

  // `matmul_only`: the weight is used by MatMul alone (a backend may repack it).
  absl::StatusOr<Weight> Bind(const std::string& name, std::vector<int64_t> want_shape, bool matmul_only = false) {
    BS_ASSIGN_OR_RETURN(HostTensor t, ckpt_.Get(name));
    t.matmul_only = matmul_only;
    if (t.shape != want_shape) {
      return absl::InvalidArgumentError(absl::StrCat("tensor \"", name, "\" has shape [", absl::StrJoin(t.shape, ", "),
                                                     "] but config.json implies [", absl::StrJoin(want_shape, ", "), "]"));
    }
    bytes_ += DTypeSize(t.dtype) * static_cast<size_t>(want_shape[0]) * (want_shape.size() > 1 ? want_shape[1] : 1);
    return device_->UploadWeight(t);
  }
  size_t bytes() const { return bytes_; }

 private:
  const CheckpointTensors& ckpt_;
  Device* device_;
  size_t bytes_ = 0;
};

// Whether any adapter of `uses` has gate/up/down_proj deltas.
bool HasMlpLora(std::span<const LoraUse> uses) {
  for (const LoraUse& u : uses) {
    for (const auto& layer : u.adapter->layers) {
      if (layer[static_cast<int>(LoraTarget::kGate)].present() || layer[static_cast<int>(LoraTarget::kUp)].present() ||
          layer[static_cast<int>(LoraTarget::kDown)].present()) {
        return true;
      }
    }
  }
  return false;
}

}  // namespace

LlamaModel::LlamaModel(const ModelConfig& config, Device* device, int max_batch_tokens)
    : config_(config), device_(device), max_batch_tokens_(max_batch_tokens) {}
LlamaModel::~LlamaModel() = default;

absl::StatusOr<std::unique_ptr<LlamaModel>> LlamaModel::Load(const std::string& model_dir, const ModelConfig& c,
                                                             Device* device, int max_batch_tokens) {
  BS_ASSIGN_OR_RETURN(CheckpointTensors ckpt, CheckpointTensors::Open(model_dir));
  auto model = std::unique_ptr<LlamaModel>(new LlamaModel(c, device, max_batch_tokens));
  model->model_dir_ = model_dir;
  auto w = std::make_unique<LlamaWeights>();
  WeightBinder bind(ckpt, device);
  const int64_t H = c.hidden_size, I = c.intermediate_size, V = c.vocab_size;
  const int64_t QD = int64_t{c.num_heads} * c.head_dim, KD = int64_t{c.num_kv_heads} * c.head_dim;

  BS_ASSIGN_OR_RETURN(w->embed, bind.Bind("model.embed_tokens.weight", {V, H}));
  BS_ASSIGN_OR_RETURN(w->final_norm, bind.Bind("model.norm.weight", {H}));
  if (ckpt.Has("lm_head.weight")) {
    BS_ASSIGN_OR_RETURN(w->lm_head, bind.Bind("lm_head.weight", {V, H}, true));
  } else if (c.tie_word_embeddings) {
    w->lm_head = w->embed;
  } else {
    return absl::InvalidArgumentError(
        "checkpoint has no tensor \"lm_head.weight\" and config.json tie_word_embeddings is false");
  }
  for (int l = 0; l < c.num_layers; ++l) {
    const std::string p = absl::StrCat("model.layers.", l, ".");
    LayerWeights L;
    BS_ASSIGN_OR_RETURN(L.input_norm, bind.Bind(p + "input_layernorm.weight", {H}));
    BS_ASSIGN_OR_RETURN(L.post_attention_norm, bind.Bind(p + "post_attention_layernorm.weight", {H}));
    BS_ASSIGN_OR_RETURN(L.q, bind.Bind(p + "self_attn.q_proj.weight", {QD, H}, true));
    BS_ASSIGN_OR_RETURN(L.k, bind.Bind(p + "self_attn.k_proj.weight", {KD, H}, true));
    BS_ASSIGN_OR_RETURN(L.v, bind.Bind(p + "self_attn.v_proj.weight", {KD, H}, true));
    BS_ASSIGN_OR_RETURN(L.o, bind.Bind(p + "self_attn.o_proj.weight", {H, QD}, true));
    if (c.qkv_bias) {
      BS_ASSIGN_OR_RETURN(L.q_bias, bind.Bind(p + "self_attn.q_proj.bias", {QD}));
      BS_ASSIGN_OR_RETURN(L.k_bias, bind.Bind(p + "self_attn.k_proj.bias", {KD}));
      BS_ASSIGN_OR_RETURN(L.v_bias, bind.Bind(p + "self_attn.v_proj.bias", {KD}));
    }
    BS_ASSIGN_OR_RETURN(L.gate, bind.Bind(p + "mlp.gate_proj.weight", {I, H}, true));
    BS_ASSIGN_OR_RETURN(L.up, bind.Bind(p + "mlp.up_proj.weight", {I, H}, true));
    BS_ASSIGN_OR_RETURN(L.down, bind.Bind(p + "mlp.down_proj.weight", {H, I}, true));
    w->layers.push_back(std::move(L));
  }
  const std::vector<float> inv_freq = c.RopeInvFreq();
  HostTensor inv{DType::kF32, {static_cast<int64_t>(inv_freq.size())}, inv_freq.data(), nullptr};
  BS_ASSIGN_OR_RETURN(w->rope_inv_freq, device->UploadWeight(inv));

  model->weight_bytes_ = bind.bytes();
  model->weights_ = std::move(w);
  BS_RETURN_IF_ERROR(model->AllocateWorkspace());
  return model;
}

absl::Status LlamaModel::AllocateWorkspace() {
  const size_t R = max_batch_tokens_;
  const auto& c = config_;
  const size_t QD = size_t{static_cast<size_t>(c.num_heads)} * c.head_dim;
  const size_t KD = size_t{static_cast<size_t>(c.num_kv_heads)} * c.head_dim;
  const size_t wide = std::max<size_t>(c.hidden_size, QD);
  BS_ASSIGN_OR_RETURN(hidden_, device_->AllocBuffer(R * c.hidden_size));
  BS_ASSIGN_OR_RETURN(normed_, device_->AllocBuffer(R * c.hidden_size));
  BS_ASSIGN_OR_RETURN(q_, device_->AllocBuffer(R * QD));
  BS_ASSIGN_OR_RETURN(k_, device_->AllocBuffer(R * KD));
  BS_ASSIGN_OR_RETURN(v_, device_->AllocBuffer(R * KD));
  BS_ASSIGN_OR_RETURN(attn_, device_->AllocBuffer(R * QD));
  BS_ASSIGN_OR_RETURN(proj_, device_->AllocBuffer(R * wide));
  BS_ASSIGN_OR_RETURN(gate_, device_->AllocBuffer(R * c.intermediate_size));
  BS_ASSIGN_OR_RETURN(up_, device_->AllocBuffer(R * c.intermediate_size));
  BS_ASSIGN_OR_RETURN(logits_rows_, device_->AllocBuffer(size_t{kLogitRowsPerPass} * c.hidden_size));
  BS_ASSIGN_OR_RETURN(logits_, device_->AllocBuffer(size_t{kLogitRowsPerPass} * c.vocab_size));
  return absl::OkStatus();
}

absl::Status LlamaModel::SetModules(std::shared_ptr<const ModuleSet> set) {
  if (set == nullptr) {
    modules_.reset();
    return absl::OkStatus();
  }
  BS_ASSIGN_OR_RETURN(CheckpointTensors ckpt, CheckpointTensors::Open(model_dir_));
  BS_ASSIGN_OR_RETURN(modules_, ModuleRuntime::Create(std::move(set), config_, ckpt, device_, max_batch_tokens_));
  return absl::OkStatus();
}

absl::Status LlamaModel::ApplyLora(int layer, LoraTarget t, const Buffer& x, Buffer& y) {
  if (lora_batch_.empty()) return absl::OkStatus();
  lora_batch_.Segments(layer, t, &lora_segments_);
  if (lora_segments_.empty()) return absl::OkStatus();
  return device_->AddLora(x, lora_segments_, y);
}

absl::Status LlamaModel::Probe(int layer, ProbePoint point, const Buffer& buf, size_t n) {
  probe_host_.resize(n);
  BS_RETURN_IF_ERROR(device_->CopyToHost(buf, 0, probe_host_));
  BS_RETURN_IF_ERROR(device_->Synchronize());
  probe_(layer, point, probe_host_);
  return absl::OkStatus();
}

absl::Status LlamaModel::Ffn(int l, int rows) {
  const auto& c = config_;
  const LayerWeights& L = weights_->layers[l];
  Device& d = *device_;
  const bool sparse = modules_ != nullptr && any_sparse_rows_;
  // A mixed batch runs the dense FFN for every row, then overwrites the sparse rows: each row's
  // result is then the one it gets alone. The oracle selector reads the dense activations too.
  const bool dense = !sparse || any_dense_rows_ || modules_->NeedsActivations(module_rows_);
  if (dense) {
    BS_RETURN_IF_ERROR(d.MatMul(normed_, rows, L.gate, nullptr, gate_));
    BS_RETURN_IF_ERROR(d.MatMul(normed_, rows, L.up, nullptr, up_));
    BS_RETURN_IF_ERROR(ApplyLora(l, LoraTarget::kGate, normed_, gate_));
    BS_RETURN_IF_ERROR(ApplyLora(l, LoraTarget::kUp, normed_, up_));
    const size_t n_inter = static_cast<size_t>(rows) * c.intermediate_size;
    if (probe_) {
      BS_RETURN_IF_ERROR(Probe(l, ProbePoint::kFfnInput, normed_, static_cast<size_t>(rows) * c.hidden_size));
      BS_RETURN_IF_ERROR(Probe(l, ProbePoint::kGate, gate_, n_inter));
    }
    BS_RETURN_IF_ERROR(d.SwiGlu(gate_, up_, n_inter, gate_));
    if (probe_) BS_RETURN_IF_ERROR(Probe(l, ProbePoint::kDownInput, gate_, n_inter));
    BS_RETURN_IF_ERROR(d.MatMul(gate_, rows, L.down, nullptr, proj_));
    BS_RETURN_IF_ERROR(ApplyLora(l, LoraTarget::kDown, gate_, proj_));
  }
  if (modules_ == nullptr || (!sparse && !any_trace_)) return absl::OkStatus();
  const Buffer* gate_pre = nullptr;
  if (sparse && modules_->NeedsGate(module_rows_)) {
    // Threshold rows cut on gate·x; up_ is free once the dense pass is done.
    BS_RETURN_IF_ERROR(d.MatMul(normed_, rows, L.gate, nullptr, up_));
    gate_pre = &up_;
  }
  return modules_->Run(l, normed_, module_rows_, dense ? &gate_ : nullptr, gate_pre, proj_);
}

absl::Status LlamaModel::Forward(std::span<const SequenceInput> batch, KvCache& cache, std::vector<float>* logits,
                                 const DeviceSampling* sampling) {
  const auto& c = config_;
  const auto& W = *weights_;
  const int bs = cache.spec.block_size;
  std::vector<int32_t> ids, positions, slots, logit_rows;
  std::vector<AttentionSeq> attn_seqs;
  lora_batch_.Clear();
  module_rows_.clear();
  any_sparse_rows_ = any_dense_rows_ = any_trace_ = false;
  for (const auto& s : batch) {
    const int32_t n = static_cast<int32_t>(s.tokens.size());
    if (n == 0) return absl::InvalidArgumentError("Forward: a sequence has no tokens");
    if (s.start_pos + n > c.max_context()) {
      return absl::OutOfRangeError(absl::StrCat("sequence reaches position ", s.start_pos + n,
                                                " beyond the model's context of ", c.max_context()));
    }
    if (static_cast<int64_t>(s.block_table.size()) * bs < s.start_pos + n) {
      return absl::InvalidArgumentError("Forward: block table too short for the sequence");
    }
    attn_seqs.push_back({static_cast<int32_t>(ids.size()), n, s.start_pos + n, s.block_table});
    if (!s.loras.empty()) {
      BS_RETURN_IF_ERROR(ValidateLoraUses(s.loras, c));
      lora_batch_.Add(static_cast<int32_t>(ids.size()), n, s.loras);
    }
    const RouterPolicy* router = s.router != nullptr && s.router->sparse() ? s.router : nullptr;
    if (router != nullptr && modules_ == nullptr) {
      return absl::FailedPreconditionError("Forward: a sparse router policy needs a module set");
    }
    if (router != nullptr && HasMlpLora(s.loras)) router = nullptr;
    any_sparse_rows_ |= router != nullptr;
    any_dense_rows_ |= router == nullptr;
    any_trace_ |= s.trace != nullptr;
    for (int32_t i = 0; i < n; ++i) {
      const int32_t pos = s.start_pos + i;
      module_rows_.push_back({router, s.trace, pos, s.tokens[i]});
      if (s.logits == LogitRows::kAll || (s.logits == LogitRows::kLast && i == n - 1)) {
        logit_rows.push_back(static_cast<int32_t>(ids.size()));
      }
      ids.push_back(s.tokens[i]);
      positions.push_back(pos);
      slots.push_back(s.block_table[pos / bs] * bs + pos % bs);
    }
  }
  const int rows = static_cast<int>(ids.size());
  if (rows > max_batch_tokens_) {
    return absl::InvalidArgumentError(absl::StrCat("Forward: ", rows, " tokens exceed max_batch_tokens ", max_batch_tokens_));
  }
  const int H = c.hidden_size;
  const size_t n_hidden = static_cast<size_t>(rows) * H;
  const AttentionParams ap{c.num_heads, c.num_kv_heads, c.head_dim, 1.0f / std::sqrt(static_cast<float>(c.head_dim))};
  const float eps = static_cast<float>(c.rms_norm_eps);
  Device& d = *device_;

  BS_RETURN_IF_ERROR(d.Embed(W.embed, ids, hidden_));
  for (int l = 0; l < c.num_layers; ++l) {
    const LayerWeights& L = W.layers[l];
    // Attention block.
    BS_RETURN_IF_ERROR(d.RmsNorm(hidden_, L.input_norm, rows, eps, normed_));
    BS_RETURN_IF_ERROR(d.MatMul(normed_, rows, L.q, c.qkv_bias ? &L.q_bias : nullptr, q_));
    BS_RETURN_IF_ERROR(d.MatMul(normed_, rows, L.k, c.qkv_bias ? &L.k_bias : nullptr, k_));
    BS_RETURN_IF_ERROR(d.MatMul(normed_, rows, L.v, c.qkv_bias ? &L.v_bias : nullptr, v_));
    BS_RETURN_IF_ERROR(ApplyLora(l, LoraTarget::kQ, normed_, q_));
    BS_RETURN_IF_ERROR(ApplyLora(l, LoraTarget::kK, normed_, k_));
    BS_RETURN_IF_ERROR(ApplyLora(l, LoraTarget::kV, normed_, v_));
    BS_RETURN_IF_ERROR(d.Rope(q_, rows, c.num_heads, c.head_dim, positions, W.rope_inv_freq));
    BS_RETURN_IF_ERROR(d.Rope(k_, rows, c.num_kv_heads, c.head_dim, positions, W.rope_inv_freq));
    BS_RETURN_IF_ERROR(d.WriteKv(cache, l, k_, v_, slots));
    BS_RETURN_IF_ERROR(d.Attention(q_, cache, l, attn_seqs, ap, attn_));
    BS_RETURN_IF_ERROR(d.MatMul(attn_, rows, L.o, nullptr, proj_));
    BS_RETURN_IF_ERROR(ApplyLora(l, LoraTarget::kO, attn_, proj_));
    BS_RETURN_IF_ERROR(d.Add(hidden_, proj_, n_hidden));
    // SwiGLU feed-forward block.
    BS_RETURN_IF_ERROR(d.RmsNorm(hidden_, L.post_attention_norm, rows, eps, normed_));
    BS_RETURN_IF_ERROR(Ffn(l, rows));
    if (probe_) BS_RETURN_IF_ERROR(Probe(l, ProbePoint::kDownOutput, proj_, n_hidden));
    BS_RETURN_IF_ERROR(d.Add(hidden_, proj_, n_hidden));
    if (probe_) BS_RETURN_IF_ERROR(Probe(l, ProbePoint::kResidual, hidden_, n_hidden));
  }
  // Only the rows that need logits go through the final norm and the (large) LM head, a bounded
  // number of rows at a time so the logits buffer stays small.
  const int out_rows = static_cast<int>(logit_rows.size());
  if (sampling != nullptr && (sampling->rows.size() != logit_rows.size() || sampling->ids.size() != logit_rows.size())) {
    return absl::InvalidArgumentError(absl::StrCat("Forward: ", sampling->rows.size(), " sampling rows for ",
                                                   out_rows, " logits rows"));
  }
  logits->resize(sampling != nullptr ? 0 : static_cast<size_t>(out_rows) * c.vocab_size);
  for (int r0 = 0; r0 < out_rows; r0 += kLogitRowsPerPass) {
    const int n = std::min(kLogitRowsPerPass, out_rows - r0);
    for (int i = 0; i < n; ++i) {
      BS_RETURN_IF_ERROR(d.Copy(hidden_, static_cast<size_t>(logit_rows[r0 + i]) * H, logits_rows_,
                                static_cast<size_t>(i) * H, H));
    }
    BS_RETURN_IF_ERROR(d.RmsNorm(logits_rows_, W.final_norm, n, eps, logits_rows_));
    BS_RETURN_IF_ERROR(d.MatMul(logits_rows_, n, W.lm_head, nullptr, logits_));
    if (sampling != nullptr) {
      BS_RETURN_IF_ERROR(d.SampleTokens(logits_, c.vocab_size, sampling->rows.subspan(r0, n),
                                        sampling->ids.subspan(r0, n)));
      continue;
    }
    BS_RETURN_IF_ERROR(d.CopyToHost(
        logits_, 0, std::span<float>(logits->data() + static_cast<size_t>(r0) * c.vocab_size,
                                     static_cast<size_t>(n) * c.vocab_size)));
  }
  return d.Synchronize();
}

}  // namespace brickserve
