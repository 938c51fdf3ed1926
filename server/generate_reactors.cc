#include "server/generate_reactors.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <deque>
#include <mutex>

#include "absl/strings/str_cat.h"
#include "server/request_convert.h"
#include "server/status_mapping.h"
#include "server/wire.h"

namespace brickserve {
namespace {

// What Generate and GenerateStream share: admission (validate, count, submit to the engine's
// scheduler), cancellation and deadline, and the lifetime. A call is referenced by the gRPC side
// (until OnDone) and, once submitted, by the engine side (until its done callback has run); the
// last one deletes it, and only then is the request counted as freed.
class GenerationCall {
 public:
  virtual ~GenerationCall() {
    if (!accepted_) return;
    RequestStats::Outcome outcome = RequestStats::Outcome::kCompleted;
    if (deadline_hit_.load()) outcome = RequestStats::Outcome::kDeadlineExceeded;
    else if (cancelled_.load()) outcome = RequestStats::Outcome::kCancelled;
    else if (failed_) outcome = RequestStats::Outcome::kFailed;
    deps_.stats->Finished(outcome, generated_tokens_);
  }

 protected:
  GenerationCall(const ServiceDeps& deps, grpc::CallbackServerContext* context)
      : deps_(deps), deadline_(context->deadline()), deadline_slack_(DeadlineSlack(deadline_)) {}

  // Engine callbacks, on the scheduler thread. OnPiece is not called for unary calls.
  virtual void OnPiece(const StreamPiece& piece) = 0;
  virtual void OnResult(absl::StatusOr<GenerationResult> result) = 0;

  // Validates the request and submits it. A non-OK result is the status to finish the call with.
  grpc::Status Admit(const grpc::ByteBuffer& bytes, bool streaming) {
    absl::StatusOr<GenerationRequest> converted = Convert(bytes);
    if (!converted.ok()) {
      deps_.stats->Rejected();
      return ToGrpcStatus(converted.status());
    }
    with_logprobs_ = converted->logprobs || converted->top_logprobs > 0;
    deps_.stats->Accepted();
    accepted_ = true;
    refs_.fetch_add(1);  // the engine side, from here on
    SubmitOptions options;
    options.priority = priority_;
    options.should_stop = [this] { return ShouldStop(); };
    StreamCallback on_piece;
    if (streaming) {
      on_piece = [this](const StreamPiece& piece) {
        if (ShouldStop()) return false;
        OnPiece(piece);
        return true;
      };
    }
    auto id = deps_.engine->Submit(*std::move(converted), std::move(options), std::move(on_piece),
                                   [this](absl::StatusOr<GenerationResult> result) {
                                     if (result.ok()) generated_tokens_ = result->completion_tokens;
                                     else failed_ = true;
                                     OnResult(std::move(result));
                                     Unref();
                                   });
    if (!id.ok()) {
      refs_.fetch_sub(1);
      deps_.stats->Unaccepted();
      accepted_ = false;
      return ToGrpcStatus(id.status());
    }
    id_ = *id;
    return grpc::Status::OK;
  }

  absl::StatusOr<GenerationRequest> Convert(const grpc::ByteBuffer& bytes) {
    v1::GenerateRequest request;
    if (absl::Status s = ParseRequest(bytes, &request); !s.ok()) return s;
    priority_ = request.priority();  // its range is checked with the other fields
    return ToEngineRequest(request, *deps_.engine, deps_.limits, deps_.bricks, &applied_bricks_);
  }

  // A client's deadline timer fires before the server's (the server counts the timeout from when
  // the call arrived), so a cancellation this close to the deadline is counted as the deadline.
  static std::chrono::system_clock::duration DeadlineSlack(std::chrono::system_clock::time_point deadline) {
    if (deadline == std::chrono::system_clock::time_point::max()) return {};  // no deadline
    const auto timeout = deadline - std::chrono::system_clock::now();
    return std::clamp<std::chrono::system_clock::duration>(timeout / 4, std::chrono::milliseconds(100),
                                                          std::chrono::seconds(1));
  }

  // From OnCancel: the engine ends the request at its next step, queued or running.
  void Cancel() {
    if (std::chrono::system_clock::now() + deadline_slack_ >= deadline_) deadline_hit_.store(true);
    cancelled_.store(true);
    if (accepted_) deps_.engine->Cancel(id_);
  }

  // Polled by the engine at every step, while queued and while running.
  bool ShouldStop() {
    if (cancelled_.load() || deadline_hit_.load()) return true;
    if (std::chrono::system_clock::now() >= deadline_) {
      deadline_hit_.store(true);
      return true;
    }
    return false;
  }

  // The status of a call that stopped early.
  grpc::Status StoppedStatus() const {
    if (deadline_hit_.load()) return grpc::Status(grpc::StatusCode::DEADLINE_EXCEEDED, "deadline exceeded");
    return grpc::Status(grpc::StatusCode::CANCELLED, "cancelled");
  }

  void Unref() {
    if (refs_.fetch_sub(1) == 1) delete this;
  }

  const ServiceDeps deps_;
  const std::chrono::system_clock::time_point deadline_;  // copied: the context dies at OnDone
  const std::chrono::system_clock::duration deadline_slack_;
  int priority_ = 0;
  uint64_t id_ = 0;
  bool with_logprobs_ = false;
  std::vector<v1::AppliedBrick> applied_bricks_;  // reported in the response's usage
  bool accepted_ = false;
  bool failed_ = false;  // scheduler thread only, read in the destructor
  int64_t generated_tokens_ = 0;
  std::atomic<bool> cancelled_{false}, deadline_hit_{false};
  std::atomic<int> refs_{1};  // the gRPC side
};

class UnaryGenerate final : public grpc::ServerUnaryReactor, public GenerationCall {
 public:
  UnaryGenerate(const ServiceDeps& deps, grpc::CallbackServerContext* context, const grpc::ByteBuffer* request,
                grpc::ByteBuffer* response)
      : GenerationCall(deps, context), response_(response) {
    if (grpc::Status s = Admit(*request, /*streaming=*/false); !s.ok()) FinishOnce(s, nullptr);
  }

  void OnPiece(const StreamPiece&) override {}

  void OnResult(absl::StatusOr<GenerationResult> result) override {
    grpc::ByteBuffer body;
    grpc::Status status = grpc::Status::OK;
    if (!result.ok()) {
      status = ToGrpcStatus(result.status());
    } else if (result->finish_reason == FinishReason::kCancelled) {
      status = StoppedStatus();
    } else {
      v1::GenerateResponse response;
      FillResponse(*result, with_logprobs_, &response);
      for (const auto& b : applied_bricks_) *response.mutable_usage()->add_bricks() = b;
      status = ToGrpcStatus(SerializeResponse(response, &body));
    }
    FinishOnce(status, status.ok() ? &body : nullptr);
  }

  void OnCancel() override {
    Cancel();
    // The client is gone: answer now, whatever the engine is doing.
    FinishOnce(StoppedStatus(), nullptr);
  }

  void OnDone() override { Unref(); }

 private:
  // The response object belongs to gRPC and is gone after OnDone, so it is written only by the
  // one caller that gets to finish.
  void FinishOnce(const grpc::Status& status, grpc::ByteBuffer* body) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (finished_) return;
      finished_ = true;
    }
    if (body != nullptr) response_->Swap(body);
    Finish(status);
  }

  grpc::ByteBuffer* const response_;
  std::mutex mu_;
  bool finished_ = false;
};

class StreamGenerate final : public grpc::ServerWriteReactor<grpc::ByteBuffer>, public GenerationCall {
 public:
  StreamGenerate(const ServiceDeps& deps, grpc::CallbackServerContext* context, const grpc::ByteBuffer* request)
      : GenerationCall(deps, context) {
    if (grpc::Status s = Admit(*request, /*streaming=*/true); !s.ok()) {
      {
        std::lock_guard<std::mutex> lock(mu_);
        finished_ = true;
      }
      Finish(s);
    }
  }

  void OnPiece(const StreamPiece& piece) override {
    v1::GenerateStreamResponse message;
    FillPiece(piece, with_logprobs_, message.mutable_piece());
    Push(message);
  }

  void OnResult(absl::StatusOr<GenerationResult> result) override {
    if (!result.ok()) {
      SetFinalStatus(ToGrpcStatus(result.status()));
    } else if (result->finish_reason == FinishReason::kCancelled) {
      SetFinalStatus(StoppedStatus());
    } else {
      v1::GenerateStreamResponse message;
      FillFinal(*result, message.mutable_final());
      for (const auto& b : applied_bricks_) *message.mutable_final()->mutable_usage()->add_bricks() = b;
      Push(message);
    }
    {
      std::lock_guard<std::mutex> lock(mu_);
      worker_done_ = true;
    }
    Perform(NextStep());
  }

  void OnCancel() override {
    Cancel();
    Perform(NextStep());
  }

  void OnWriteDone(bool ok) override {
    {
      std::lock_guard<std::mutex> lock(mu_);
      writing_ = false;
      pending_.pop_front();
      // A failed write means the stream is broken (the client left); stop generating.
      if (!ok) cancelled_.store(true);
    }
    Perform(NextStep());
  }

  void OnDone() override { Unref(); }

 private:
  struct Step {
    enum { kNone, kWrite, kFinish } kind = kNone;
    const grpc::ByteBuffer* message = nullptr;
    grpc::Status status;
  };

  void Push(const v1::GenerateStreamResponse& message) {
    grpc::ByteBuffer bytes;
    if (absl::Status s = SerializeResponse(message, &bytes); !s.ok()) {
      failed_ = true;  // scheduler thread, like every Push
      SetFinalStatus(ToGrpcStatus(s));
      return;
    }
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (finished_) return;
      // Pieces queue here while a write is in flight; a slow reader costs memory bounded by
      // max_new_tokens, never a thread and never the engine.
      pending_.push_back(std::move(bytes));
    }
    Perform(NextStep());
  }

  void SetFinalStatus(const grpc::Status& status) {
    std::lock_guard<std::mutex> lock(mu_);
    if (final_status_.ok()) final_status_ = status;
  }

  // Decides under the lock what to do next; Perform() does it outside the lock, so a reaction
  // that gRPC runs inline can take the lock again.
  Step NextStep() {
    std::lock_guard<std::mutex> lock(mu_);
    Step step;
    if (finished_ || writing_) return step;
    if (cancelled_.load()) {
      finished_ = true;
      step.kind = Step::kFinish;
      step.status = StoppedStatus();
    } else if (!pending_.empty()) {
      writing_ = true;
      step.kind = Step::kWrite;
      step.message = &pending_.front();  // deque: stays put while more are pushed behind it
    } else if (worker_done_) {
      finished_ = true;
      step.kind = Step::kFinish;
      step.status = final_status_;
    }
    return step;
  }

  void Perform(const Step& step) {
    if (step.kind == Step::kWrite) StartWrite(step.message);
    else if (step.kind == Step::kFinish) Finish(step.status);
  }

  std::mutex mu_;
  std::deque<grpc::ByteBuffer> pending_;  // front() is in flight while writing_
  bool writing_ = false;
  bool finished_ = false;
  bool worker_done_ = false;
  grpc::Status final_status_;
};

}  // namespace

grpc::ServerUnaryReactor* StartGenerate(const ServiceDeps& deps, grpc::CallbackServerContext* context,
                                        const grpc::ByteBuffer* request, grpc::ByteBuffer* response) {
  return new UnaryGenerate(deps, context, request, response);
}

grpc::ServerWriteReactor<grpc::ByteBuffer>* StartGenerateStream(const ServiceDeps& deps,
                                                                grpc::CallbackServerContext* context,
                                                                const grpc::ByteBuffer* request) {
  return new StreamGenerate(deps, context, request);
}

}  // namespace brickserve
