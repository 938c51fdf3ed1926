#include "engine/serving/scheduler.h"

#include <algorithm>

#include "absl/strings/str_cat.h"

namespace brickserve {
namespace {

// Scheduling order: higher priority first, then earlier submission (ids grow with submission).
bool Before(const Sequence& a, const Sequence& b) {
  if (a.priority() != b.priority()) return a.priority() > b.priority();
  return a.id() < b.id();
}

}  // namespace

Scheduler::Scheduler(LlamaModel* model, KvCache* cache, BlockPool* pool, const Tokenizer* tokenizer,
                     const std::vector<int32_t>* eos_ids, const SchedulerOptions& options)
    : model_(model),
      cache_(cache),
      pool_(pool),
      tokenizer_(tokenizer),
      eos_ids_(eos_ids),
      options_(options),
      watermark_blocks_(std::max(1, pool->num_blocks() / 100)) {
  UpdateGauges();
  thread_ = std::thread([this] { Loop(); });
}

Scheduler::~Scheduler() {
  AbortAll(absl::UnavailableError("the engine is shutting down"));
  {
    std::lock_guard<std::mutex> lock(mu_);
    stopping_ = true;
    accepting_ = false;
  }
  cv_.notify_all();
  thread_.join();
}

absl::StatusOr<uint64_t> Scheduler::Submit(GenerationRequest request, SubmitOptions options,
                                           StreamCallback on_piece, DoneCallback on_done) {
  const int64_t tokens = static_cast<int64_t>(request.prompt_ids.size());
  absl::Status refused;
  uint64_t id = 0;
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (!accepting_) {
      refused = absl::UnavailableError("the server is shutting down (draining) and accepts no new requests");
    } else if (static_cast<int>(waiting_.size()) >= options_.max_queued_requests) {
      refused = absl::ResourceExhaustedError(absl::StrCat(waiting_.size(), " requests are already queued (",
                                                          "max_queued_requests = ", options_.max_queued_requests,
                                                          "); retry later"));
    } else if (options_.max_queued_tokens > 0 && waiting_tokens_ + tokens > options_.max_queued_tokens) {
      refused = absl::ResourceExhaustedError(absl::StrCat(
          "queued prompts hold ", waiting_tokens_, " tokens and this one adds ", tokens,
          " (max_queued_tokens = ", options_.max_queued_tokens, "); retry later"));
    } else {
      id = next_id_++;
      InsertWaiting(std::make_unique<Sequence>(id, std::move(request), std::move(options), std::move(on_piece),
                                               std::move(on_done), *tokenizer_, *eos_ids_, options_.max_context));
      ++active_;
    }
  }
  if (!refused.ok()) {
    std::lock_guard<std::mutex> lock(stats_mu_);
    ++stats_.requests_rejected;
    return refused;
  }
  cv_.notify_all();
  return id;
}

void Scheduler::Cancel(uint64_t id) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    cancelled_.insert(id);
  }
  cv_.notify_all();
}

void Scheduler::StopAccepting() {
  std::lock_guard<std::mutex> lock(mu_);
  accepting_ = false;
}

void Scheduler::AbortAll(const absl::Status& status) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    abort_status_ = status;
  }
  cv_.notify_all();
  // Returns once the scheduler thread has ended them all.
  std::unique_lock<std::mutex> lock(mu_);
  idle_cv_.wait(lock, [this] { return active_ == 0 || std::this_thread::get_id() == thread_.get_id(); });
}

bool Scheduler::WaitUntilIdle(Clock::time_point deadline) {
  std::unique_lock<std::mutex> lock(mu_);
  return idle_cv_.wait_until(lock, deadline, [this] { return active_ == 0; });
}

absl::Status Scheduler::RunExclusive(std::function<absl::Status()> task) {
  Task t{std::move(task)};
  std::unique_lock<std::mutex> lock(mu_);
  if (stopping_) return absl::UnavailableError("the engine is shutting down");
  tasks_.push_back(&t);
  cv_.notify_all();
  task_cv_.wait(lock, [&] { return t.done; });
  return t.result;
}

EngineStats Scheduler::Stats() const {
  EngineStats s;
  {
    std::lock_guard<std::mutex> lock(stats_mu_);
    s = stats_;
  }
  s.time_to_first_token = ttft_.Get();
  s.inter_token_latency = itl_.Get();
  s.queue_time = queue_time_.Get();
  s.step_time = step_time_.Get();
  return s;
}

void Scheduler::Loop() {
  for (;;) {
    std::deque<Task*> tasks;
    {
      std::unique_lock<std::mutex> lock(mu_);
      cv_.wait(lock, [this] {
        return stopping_ || !abort_status_.ok() || !tasks_.empty() || !waiting_.empty() || !running_.empty();
      });
      if (stopping_ && waiting_.empty() && running_.empty() && tasks_.empty()) return;
      tasks.swap(tasks_);
    }
    for (Task* t : tasks) {
      absl::Status result = t->fn();
      std::lock_guard<std::mutex> lock(mu_);
      t->result = std::move(result);
      t->done = true;
      task_cv_.notify_all();
    }
    if (!Step()) {
      // Nothing could run (e.g. every queued request is blocked): do not spin.
      std::unique_lock<std::mutex> lock(mu_);
      cv_.wait_for(lock, std::chrono::milliseconds(5));
    }
  }
}

bool Scheduler::Step() {
  std::vector<SeqPtr> done;
  CollectStopped(&done);
  int budget = options_.max_batch_tokens;
  std::vector<Planned> plan;
  PreemptForPriority();  // makes room for the waiting request it favours: admission goes on
  bool preempted = false;
  ScheduleRunning(&budget, &plan, &preempted);
  // Newly arriving requests wait while the running ones are short of KV blocks.
  if (!preempted) Admit(&budget, &plan);
  bool ran = false;
  if (!plan.empty()) {
    if (absl::Status s = RunBatch(plan, &done); !s.ok()) {
      // The forward pass failed: every request in it ends with the error; the others go on.
      std::vector<SeqPtr> failed;
      for (const Planned& p : plan) {
        ReleaseBlocks(*p.seq);
        failed.push_back(TakeRunning(p.seq));
      }
      Deliver(failed, s);
    }
    ran = true;
  }
  Deliver(done);
  UpdateGauges();
  return ran || !done.empty();
}

void Scheduler::CollectStopped(std::vector<SeqPtr>* done) {
  absl::Status abort;
  std::unordered_set<uint64_t> cancelled;
  auto ends = [&](const Sequence& s) { return !abort.ok() || cancelled.contains(s.id()) || s.StopRequested(); };
  {
    std::lock_guard<std::mutex> lock(mu_);
    abort = abort_status_;
    abort_status_ = absl::OkStatus();
    cancelled.swap(cancelled_);
    for (auto it = waiting_.begin(); it != waiting_.end();) {
      Sequence& s = **it;
      if (!ends(s)) {
        ++it;
        continue;
      }
      s.MarkCancelled();
      waiting_tokens_ -= s.prompt_len();
      done->push_back(std::move(*it));
      it = waiting_.erase(it);
    }
  }
  for (size_t i = 0; i < running_.size();) {
    Sequence& s = *running_[i];
    if (!ends(s)) {
      ++i;
      continue;
    }
    s.MarkCancelled();
    ReleaseBlocks(s);
    done->push_back(std::move(running_[i]));
    running_.erase(running_.begin() + i);
  }
  if (!abort.ok()) {
    Deliver(*done, abort);
    done->clear();
  }
}

void Scheduler::PreemptForPriority() {
  // A waiting request takes the place of running ones of lower priority when the batch is full or
  // the KV pool is too short for its first prompt chunk.
  const int bs = pool_->block_size();
  for (;;) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (waiting_.empty() || running_.empty()) return;
      const Sequence& head = *waiting_.front();
      if (running_.back()->priority() >= head.priority()) return;
      const bool batch_full = static_cast<int>(running_.size()) >= options_.max_running;
      const int first_chunk_blocks = (std::min(head.pending(), options_.max_batch_tokens) + bs - 1) / bs;
      const bool kv_short = pool_->num_available() < first_chunk_blocks + watermark_blocks_;
      if (!batch_full && !kv_short) return;
    }
    Preempt(running_.back().get());
  }
}

void Scheduler::ScheduleRunning(int* budget, std::vector<Planned>* plan, bool* preempted) {
  // Decode rows first: a long prompt never holds back anyone's next token.
  for (int pass = 0; pass < 2; ++pass) {
    if (pass == 1 && !plan->empty()) {
      // Requests are decoding: cap the prompt rows added to their step (the rest of this step's
      // budget, new admissions included), so their next token is not held up by a long prompt.
      if (options_.prefill_chunk_tokens > 0) *budget = std::min(*budget, options_.prefill_chunk_tokens);
      if (const double target = StepTarget(); target > 0) {
        // As many as the time target leaves after the decode rows, but at least a KV block's
        // worth, so prompts still progress when the decode rows alone overrun it.
        int decode_rows = 0;
        for (const Planned& p : *plan) decode_rows += p.tokens;
        const int fit = std::max(step_cost_.RowsWithin(target) - decode_rows, pool_->block_size());
        *budget = std::min(*budget, fit);
      }
    }
    std::vector<Sequence*> order;
    for (const auto& s : running_) {
      if ((s->pending() == 1) == (pass == 0)) order.push_back(s.get());
    }
    for (Sequence* s : order) {
      if (*budget == 0) return;
      if (std::none_of(running_.begin(), running_.end(), [s](const SeqPtr& r) { return r.get() == s; })) {
        continue;  // preempted earlier in this step
      }
      int n = std::min(s->pending(), *budget);
      bool keep = true;
      while (!pool_->Grow(&s->blocks, s->num_computed + n)) {
        const int fits = static_cast<int>(s->blocks.size()) * pool_->block_size() - s->num_computed;
        if (pass == 1 && fits > 0) {  // a shorter prompt chunk is progress too
          n = fits;
          break;
        }
        Sequence* victim = PreemptionVictim(*plan);
        *preempted = true;
        Preempt(victim);
        if (victim == s) {
          keep = false;
          break;
        }
      }
      if (!keep) continue;
      plan->push_back({s, n});
      *budget -= n;
    }
  }
}

void Scheduler::Admit(int* budget, std::vector<Planned>* plan) {
  const int bs = pool_->block_size();
  while (*budget > 0) {
    SeqPtr seq;
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (waiting_.empty()) return;
      Sequence& head = *waiting_.front();
      if (static_cast<int>(running_.size()) >= options_.max_running) return;
      MatchPrefix(head);
      const int n = std::min(head.pending(), *budget);
      const int need = (head.num_computed + n + bs - 1) / bs - static_cast<int>(head.blocks.size());
      if ((!running_.empty() && pool_->num_available() - need < watermark_blocks_) ||
          !pool_->Grow(&head.blocks, head.num_computed + n)) {
        ReleaseBlocks(head);
        return;
      }
      seq = std::move(waiting_.front());
      waiting_.pop_front();
      waiting_tokens_ -= seq->prompt_len();
      plan->push_back({seq.get(), n});
      *budget -= n;
    }
    {
      std::lock_guard<std::mutex> lock(stats_mu_);
      if (seq->preemptions == 0) {
        ++stats_.requests_admitted;
        stats_.prompt_tokens += seq->prompt_len();
        stats_.prefix_cache_hit_tokens += seq->num_computed;
      }
    }
    if (seq->preemptions == 0) {
      seq->AddCachedPromptTokens(seq->num_computed);
      queue_time_.Observe(Seconds(Clock::now() - seq->arrival()));
    }
    InsertRunning(std::move(seq));
  }
}

absl::Status Scheduler::RunBatch(const std::vector<Planned>& plan, std::vector<SeqPtr>* done) {
  std::vector<SequenceInput> inputs;
  inputs.reserve(plan.size());
  for (const Planned& p : plan) {
    Sequence& s = *p.seq;
    const bool last = s.num_computed + p.tokens == static_cast<int>(s.tokens().size());
    inputs.push_back({std::span<const int32_t>(s.tokens()).subspan(s.num_computed, p.tokens), s.num_computed,
                      s.blocks, last ? LogitRows::kLast : LogitRows::kNone, s.loras(), &s.router(),
                      &s.module_usage()});
  }
  // On a GPU the device samples and only the ids come back, unless a request needs the logits on
  // the host (logprobs, on_logits). The device rows carry the draws of the requests' own RNGs.
  const int V = model_->config().vocab_size;
  bool device_sampling = model_->samples_on_device();
  for (size_t i = 0; i < plan.size() && device_sampling; ++i) {
    device_sampling = inputs[i].logits == LogitRows::kNone || !plan[i].seq->needs_host_logits();
  }
  std::vector<SampleRow> sample_rows;
  std::vector<std::vector<PenaltyToken>> penalties;
  std::vector<int32_t> sampled;
  DeviceSampling sampling;
  if (device_sampling) {
    penalties.reserve(plan.size());  // no reallocation: each row's span points into its list
    sample_rows.reserve(plan.size());
    for (size_t i = 0; i < plan.size(); ++i) {
      if (inputs[i].logits == LogitRows::kNone) continue;
      plan[i].seq->DeviceSampleRow(V, &penalties.emplace_back(), &sample_rows.emplace_back());
    }
    sampled.resize(sample_rows.size());
    sampling = {sample_rows, sampled};
  }
  std::vector<float> logits;
  const Clock::time_point start = Clock::now();
  if (absl::Status st = model_->Forward(inputs, *cache_, &logits, device_sampling ? &sampling : nullptr); !st.ok()) {
    return st;
  }
  const double seconds = Seconds(Clock::now() - start);
  step_time_.Observe(seconds);
  int rows = 0;
  for (const Planned& p : plan) rows += p.tokens;
  step_cost_.Observe(rows, seconds);
  size_t row = 0;
  uint64_t prefill = 0, generated = 0;
  const Clock::time_point now = Clock::now();
  for (size_t i = 0; i < plan.size(); ++i) {
    Sequence& s = *plan[i].seq;
    s.num_computed += plan[i].tokens;
    if (plan[i].tokens > 1 || s.result().tokens.empty()) prefill += plan[i].tokens;
    PublishFullBlocks(s);
    if (inputs[i].logits == LogitRows::kNone) continue;
    const bool first = s.result().tokens.empty();
    const Clock::time_point previous = s.last_token_time();
    const bool finished = device_sampling ? s.AcceptSampled(sampled[row])
                                          : s.AcceptLogits(std::span<float>(logits.data() + row * V, V));
    ++row;
    ++generated;
    if (first) {
      ttft_.Observe(s.result().time_to_first_token_s);
    } else {
      itl_.Observe(Seconds(now - previous));
    }
    if (finished) {
      ReleaseBlocks(s);
      done->push_back(TakeRunning(&s));
    }
  }
  std::lock_guard<std::mutex> lock(stats_mu_);
  ++stats_.steps;
  stats_.prefill_tokens += prefill;
  stats_.generated_tokens += generated;
  return absl::OkStatus();
}

Sequence* Scheduler::PreemptionVictim(const std::vector<Planned>& plan) const {
  for (auto it = running_.rbegin(); it != running_.rend(); ++it) {
    Sequence* s = it->get();
    if (std::none_of(plan.begin(), plan.end(), [s](const Planned& p) { return p.seq == s; })) return s;
  }
  return nullptr;
}

void Scheduler::Preempt(Sequence* seq) {
  ReleaseBlocks(*seq);
  ++seq->preemptions;
  {
    std::lock_guard<std::mutex> lock(stats_mu_);
    ++stats_.preemptions;
  }
  SeqPtr s = TakeRunning(seq);
  std::lock_guard<std::mutex> lock(mu_);
  InsertWaiting(std::move(s));
}

void Scheduler::ReleaseBlocks(Sequence& seq) {
  for (int32_t b : seq.blocks) pool_->Release(b);
  seq.blocks.clear();
  seq.block_hashes.clear();
  seq.num_computed = 0;
}

void Scheduler::MatchPrefix(Sequence& seq) {
  const int bs = pool_->block_size();
  const auto& tokens = seq.tokens();
  // At least the last token is computed: its logits are needed.
  const int max_blocks = (static_cast<int>(tokens.size()) - 1) / bs;
  uint64_t parent = seq.options().prefix_namespace;
  for (int i = 0; i < max_blocks; ++i) {
    const std::span<const int32_t> block(tokens.data() + static_cast<size_t>(i) * bs, bs);
    const uint64_t hash = BlockPool::ChainHash(parent, block);
    const std::optional<int32_t> hit = pool_->Lookup(hash, block);
    if (!hit) break;
    seq.blocks.push_back(*hit);
    seq.block_hashes.push_back(hash);
    parent = hash;
  }
  seq.num_computed = static_cast<int>(seq.blocks.size()) * bs;
}

void Scheduler::PublishFullBlocks(Sequence& seq) {
  const int bs = pool_->block_size();
  const auto& tokens = seq.tokens();
  while (static_cast<int>(seq.block_hashes.size() + 1) * bs <= seq.num_computed) {
    const size_t i = seq.block_hashes.size();
    const std::span<const int32_t> block(tokens.data() + i * bs, bs);
    const uint64_t parent = i == 0 ? seq.options().prefix_namespace : seq.block_hashes[i - 1];
    const uint64_t hash = BlockPool::ChainHash(parent, block);
    pool_->Publish(seq.blocks[i], hash, block);
    seq.block_hashes.push_back(hash);
  }
}

Scheduler::SeqPtr Scheduler::TakeRunning(Sequence* seq) {
  auto it = std::find_if(running_.begin(), running_.end(), [seq](const SeqPtr& s) { return s.get() == seq; });
  SeqPtr out = std::move(*it);
  running_.erase(it);
  return out;
}

void Scheduler::InsertRunning(SeqPtr seq) {
  auto it = std::upper_bound(running_.begin(), running_.end(), seq,
                             [](const SeqPtr& a, const SeqPtr& b) { return Before(*a, *b); });
  running_.insert(it, std::move(seq));
}

void Scheduler::InsertWaiting(SeqPtr seq) {
  waiting_tokens_ += seq->prompt_len();
  auto it = std::upper_bound(waiting_.begin(), waiting_.end(), seq,
                             [](const SeqPtr& a, const SeqPtr& b) { return Before(*a, *b); });
  waiting_.insert(it, std::move(seq));
}

void Scheduler::Deliver(std::vector<SeqPtr>& done, const absl::Status& status) {
  if (done.empty()) return;
  {
    std::lock_guard<std::mutex> lock(stats_mu_);
    for (auto& s : done) stats_.module_usage.Merge(s->module_usage());
  }
  for (auto& s : done) s->Deliver(status);
  const size_t n = done.size();
  done.clear();  // frees them before the caller is told the engine is idle
  {
    std::lock_guard<std::mutex> lock(stats_mu_);
    stats_.requests_finished += n;
  }
  UpdateGauges();  // a caller that waited for idle sees the gauges of that moment
  std::lock_guard<std::mutex> lock(mu_);
  active_ -= static_cast<int>(n);
  idle_cv_.notify_all();
}

double Scheduler::StepTarget() const {
  if (!step_cost_.ready()) return 0;
  if (options_.max_step_ms > 0) return options_.max_step_ms * 1e-3;
  // A lone decode step is what one request alone waits between tokens: the ratio bounds how much
  // a crowd of arriving prompts may stretch everyone's inter-token gap beyond that.
  if (options_.max_step_ratio > 0) return options_.max_step_ratio * step_cost_.Predict(1);
  return 0;
}

void Scheduler::UpdateGauges() {
  std::lock_guard<std::mutex> lock(mu_);
  std::lock_guard<std::mutex> stats_lock(stats_mu_);
  stats_.queued_requests = static_cast<int>(waiting_.size());
  stats_.queued_prompt_tokens = waiting_tokens_;
  stats_.running_requests = static_cast<int>(running_.size());
  stats_.kv_blocks_total = pool_->num_blocks();
  stats_.kv_blocks_in_use = pool_->num_in_use();
  stats_.kv_blocks_cached = pool_->num_cached();
  stats_.kv_block_size = pool_->block_size();
  stats_.step_time_target_s = StepTarget();
}

}  // namespace brickserve
