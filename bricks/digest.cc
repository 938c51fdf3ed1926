#include "bricks/digest.h"

#include <openssl/evp.h>

#include <memory>

#include "absl/strings/str_cat.h"
#include "engine/util/mapped_file.h"
#include "engine/util/status_macros.h"

namespace brickserve {

absl::StatusOr<std::string> Sha256OfFile(const std::string& path) {
  BS_ASSIGN_OR_RETURN(std::shared_ptr<MappedFile> file, MappedFile::Open(path));
  std::unique_ptr<EVP_MD_CTX, decltype(&EVP_MD_CTX_free)> ctx(EVP_MD_CTX_new(), EVP_MD_CTX_free);
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  if (ctx == nullptr || EVP_DigestInit_ex(ctx.get(), EVP_sha256(), nullptr) != 1 ||
      EVP_DigestUpdate(ctx.get(), file->data(), file->size()) != 1 || EVP_DigestFinal_ex(ctx.get(), md, &len) != 1) {
    return absl::InternalError(absl::StrCat("SHA-256 of ", path, " failed in OpenSSL"));
  }
  static constexpr char kHex[] = "0123456789abcdef";
  std::string hex;
  hex.reserve(2 * len);
  for (unsigned int i = 0; i < len; ++i) {
    hex.push_back(kHex[md[i] >> 4]);
    hex.push_back(kHex[md[i] & 15]);
  }
  return hex;
}

}  // namespace brickserve
