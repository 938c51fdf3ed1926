#include "engine/kv/block_allocator.h"

#include "absl/strings/str_cat.h"

namespace brickserve {

BlockAllocator::BlockAllocator(int num_blocks) : num_blocks_(num_blocks) {
  free_.reserve(num_blocks);
  for (int b = num_blocks - 1; b >= 0; --b) free_.push_back(b);
}

absl::StatusOr<int32_t> BlockAllocator::Allocate() {
  if (free_.empty()) {
    return absl::ResourceExhaustedError(absl::StrCat("KV cache is full (", num_blocks_, " blocks in use)"));
  }
  const int32_t b = free_.back();
  free_.pop_back();
  return b;
}

void BlockAllocator::Free(int32_t block) { free_.push_back(block); }

BlockTable::~BlockTable() {
  for (int32_t b : blocks_) allocator_->Free(b);
}

absl::Status BlockTable::Reserve(int tokens) {
  while (capacity() < tokens) {
    auto b = allocator_->Allocate();
    if (!b.ok()) return b.status();
    blocks_.push_back(*b);
  }
  return absl::OkStatus();
}

}  // namespace brickserve
