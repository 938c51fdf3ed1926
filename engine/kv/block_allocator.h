// Fixed-size KV blocks from one pool sized at start-up, and per-sequence block tables.
#pragma once

#include <cstdint>
#include <vector>

#include "absl/status/statusor.h"

namespace brickserve {

class BlockAllocator {
 public:
  explicit BlockAllocator(int num_blocks);
  int num_blocks() const { return num_blocks_; }
  int num_free() const { return static_cast<int>(free_.size()); }
  // RESOURCE_EXHAUSTED when the pool is empty.
  absl::StatusOr<int32_t> Allocate();
  void Free(int32_t block);

 private:
  int num_blocks_;
  std::vector<int32_t> free_;  // LIFO: recently freed blocks are warm in cache
};

// The blocks one sequence holds; grows as the sequence does and returns them when destroyed.
class BlockTable {
 public:
  BlockTable(BlockAllocator* allocator, int block_size) : allocator_(allocator), block_size_(block_size) {}
  ~BlockTable();
  BlockTable(const BlockTable&) = delete;
  BlockTable& operator=(const BlockTable&) = delete;

  // Makes room for `tokens` positions in total.
  absl::Status Reserve(int tokens);
  const std::vector<int32_t>& blocks() const { return blocks_; }
  int capacity() const { return static_cast<int>(blocks_.size()) * block_size_; }

 private:
  BlockAllocator* allocator_;
  int block_size_;
  std::vector<int32_t> blocks_;
};

}  // namespace brickserve
