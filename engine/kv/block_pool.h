// The paged KV cache's host side: one pool of fixed-size blocks sized at start-up, shared by
// reference count, with a prefix cache of full blocks.
//
// A full block's KV depends only on the tokens up to its end (and the request's prefix namespace,
// e.g. its bricks), so its identity is a hash chain over the blocks before it. Blocks published to
// the cache stay there after their last user leaves and are evicted least recently used first,
// only when a fresh block is needed.
#pragma once

#include <cstdint>
#include <list>
#include <optional>
#include <span>
#include <unordered_map>
#include <vector>

#include "absl/status/statusor.h"

namespace brickserve {

class BlockPool {
 public:
  BlockPool(int num_blocks, int block_size, bool prefix_cache);
  BlockPool(const BlockPool&) = delete;
  BlockPool& operator=(const BlockPool&) = delete;

  int num_blocks() const { return num_blocks_; }
  int block_size() const { return block_size_; }
  // Blocks Allocate can hand out: never used, or cached with no user (evictable).
  int num_available() const { return static_cast<int>(free_.size() + evictable_.size()); }
  // Blocks referenced by at least one sequence.
  int num_in_use() const { return num_blocks_ - num_available(); }
  int num_cached() const { return static_cast<int>(by_hash_.size()); }

  // A fresh block with one reference; evicts the least recently used cached block if none is
  // free. RESOURCE_EXHAUSTED when every block is referenced.
  absl::StatusOr<int32_t> Allocate();
  // Appends fresh blocks to `blocks` until they hold `tokens` positions; false when the pool ran
  // dry (the blocks it did get stay appended).
  bool Grow(std::vector<int32_t>* blocks, int tokens);
  void Retain(int32_t block);
  // Drops a reference; at zero the block becomes free, or evictable if it is cached.
  void Release(int32_t block);

  // Chain hash of a full block: `parent` is the previous block's hash (or the namespace seed for
  // the first block), `tokens` the block's tokens.
  static uint64_t ChainHash(uint64_t parent, std::span<const int32_t> tokens);
  // The cached block with this hash and exactly these tokens, retained for the caller.
  std::optional<int32_t> Lookup(uint64_t hash, std::span<const int32_t> tokens);
  // Offers a just-computed full block to the cache (no-op if disabled or the hash is taken).
  void Publish(int32_t block, uint64_t hash, std::span<const int32_t> tokens);

 private:
  struct Entry {
    uint64_t hash = 0;
    bool cached = false;
    std::vector<int32_t> tokens;  // compared on lookup: a hash collision can never alias KV
  };
  void Uncache(int32_t block);

  const int num_blocks_;
  const int block_size_;
  const bool prefix_cache_;
  std::vector<int32_t> refs_;
  std::vector<Entry> entries_;
  std::vector<int32_t> free_;     // LIFO: recently freed blocks are warm
  std::list<int32_t> evictable_;  // cached and unreferenced; front = least recently used
  std::vector<std::list<int32_t>::iterator> evictable_pos_;
  std::unordered_map<uint64_t, int32_t> by_hash_;
};

// The blocks of a one-off pass (scoring); returned to the pool when destroyed.
class BlockTable {
 public:
  explicit BlockTable(BlockPool* pool) : pool_(pool) {}
  ~BlockTable();
  BlockTable(const BlockTable&) = delete;
  BlockTable& operator=(const BlockTable&) = delete;

  // Makes room for `tokens` positions in total.
  absl::Status Reserve(int tokens);
  const std::vector<int32_t>& blocks() const { return blocks_; }

 private:
  BlockPool* pool_;
  std::vector<int32_t> blocks_;
};

}  // namespace brickserve
