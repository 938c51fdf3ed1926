#include "engine/kv/block_pool.h"

#include <algorithm>

#include "absl/hash/hash.h"
#include "absl/strings/str_cat.h"

namespace brickserve {

BlockPool::BlockPool(int num_blocks, int block_size, bool prefix_cache)
    : num_blocks_(num_blocks),
      block_size_(block_size),
      prefix_cache_(prefix_cache),
      refs_(num_blocks, 0),
      entries_(num_blocks),
      evictable_pos_(num_blocks, evictable_.end()) {
  free_.reserve(num_blocks);
  for (int b = num_blocks - 1; b >= 0; --b) free_.push_back(b);
}

absl::StatusOr<int32_t> BlockPool::Allocate() {
  int32_t b;
  if (!free_.empty()) {
    b = free_.back();
    free_.pop_back();
  } else if (!evictable_.empty()) {
    b = evictable_.front();
    evictable_.pop_front();
    evictable_pos_[b] = evictable_.end();
    Uncache(b);
  } else {
    return absl::ResourceExhaustedError(absl::StrCat("KV cache is full (all ", num_blocks_, " blocks in use)"));
  }
  refs_[b] = 1;
  return b;
}

bool BlockPool::Grow(std::vector<int32_t>* blocks, int tokens) {
  while (static_cast<int>(blocks->size()) * block_size_ < tokens) {
    auto b = Allocate();
    if (!b.ok()) return false;
    blocks->push_back(*b);
  }
  return true;
}

void BlockPool::Retain(int32_t block) {
  if (refs_[block]++ == 0 && evictable_pos_[block] != evictable_.end()) {
    evictable_.erase(evictable_pos_[block]);
    evictable_pos_[block] = evictable_.end();
  }
}

void BlockPool::Release(int32_t block) {
  if (--refs_[block] > 0) return;
  if (entries_[block].cached) {
    evictable_pos_[block] = evictable_.insert(evictable_.end(), block);
  } else {
    free_.push_back(block);
  }
}

uint64_t BlockPool::ChainHash(uint64_t parent, std::span<const int32_t> tokens) {
  return absl::HashOf(parent, absl::MakeConstSpan(tokens.data(), tokens.size()));
}

std::optional<int32_t> BlockPool::Lookup(uint64_t hash, std::span<const int32_t> tokens) {
  if (!prefix_cache_) return std::nullopt;
  auto it = by_hash_.find(hash);
  if (it == by_hash_.end()) return std::nullopt;
  const Entry& e = entries_[it->second];
  if (!std::equal(e.tokens.begin(), e.tokens.end(), tokens.begin(), tokens.end())) return std::nullopt;
  Retain(it->second);
  return it->second;
}

void BlockPool::Publish(int32_t block, uint64_t hash, std::span<const int32_t> tokens) {
  if (!prefix_cache_ || entries_[block].cached || by_hash_.contains(hash)) return;
  Entry& e = entries_[block];
  e.hash = hash;
  e.cached = true;
  e.tokens.assign(tokens.begin(), tokens.end());
  by_hash_.emplace(hash, block);
}

void BlockPool::Uncache(int32_t block) {
  Entry& e = entries_[block];
  if (!e.cached) return;
  by_hash_.erase(e.hash);
  e = Entry();
}

BlockTable::~BlockTable() {
  for (int32_t b : blocks_) pool_->Release(b);
}

absl::Status BlockTable::Reserve(int tokens) {
  if (pool_->Grow(&blocks_, tokens)) return absl::OkStatus();
  return absl::ResourceExhaustedError(
      absl::StrCat("KV cache is full (all ", pool_->num_blocks(), " blocks in use)"));
}

}  // namespace brickserve
