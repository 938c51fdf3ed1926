#!/usr/bin/env bash
# Packs what a GPU machine needs to run brickserve's CUDA checks (docs/GPU.md) into OUT_DIR, a folder
# inside the repo that git ignores, so the device tool can `carry` it:
#
#   scripts/gpu_bundle.sh BUILD_DIR [OUT_DIR]        (OUT_DIR default: <repo>/.gpu)
#
# The GPU machine has the CUDA toolkit, PyTorch and transformers but none of our Debian libraries
# (abseil, highway, OpenBLAS, ICU), so the bundle holds:
#   bin/       brickserve, engine_bench (and membw when built), stripped
#   lib/libbrickserve_cuda.so  the CUDA backend plugin (engine/backend/cuda_plugin.h), when built;
#              gpu_check.sh points BRICKSERVE_CUDA_PLUGIN at it
#   tests/     the test binaries matching $BUNDLE_TESTS (default: device_conformance*), stripped
#   lib/       every shared library they load (ldd) except glibc, the CUDA driver and the CUDA
#              toolkit's own libraries (cuBLAS & co., found on the GPU machine: listed in manifest)
#   lib-cxx/   libstdc++ and libgcc_s (used there only if the system's copies are too old)
#   testdata/  BUILD_DIR/testdata (the ctest fixtures' data); the fixtures the device tests need that
#              it lacks (golden, lora_golden) are written fresh (tests/reference/make_*golden.py, $PYTHON)
#   tokenizer/ tokenizer.json + tokenizer_config.json of ../shared/models/brick-tiny (the shared
#              folder does not travel), for models made on the GPU machine
#   manifest.env  build paths baked into the binaries, glibc needs, the CUDA libraries expected there
# packed as OUT_DIR/bundle.tar.xz (OpenBLAS and ICU alone are ~67 MB unpacked, ~12 MB packed), plus
# OUT_DIR/brick-tiny.tar.xz (the shared pretrained model, for brick_tiny-based tests) when it fits.
# The device tool carries at most 64 MiB: the script fails above BUNDLE_LIMIT_MIB (default 56).
# scripts/gpu_check.sh unpacks it on the GPU machine.
#
# Environment (optional):
#   BUNDLE_TESTS       space-separated name globs of test binaries     (default: "device_conformance* device_sampling*")
#   BUNDLE_BRICK_TINY  auto (if it fits) | 1 (required) | 0 (never)    (default: auto)
#   BUNDLE_LIMIT_MIB   size limit of OUT_DIR in MiB                    (default: 56)
#   BUNDLE_GOLDEN      1: write the golden/lora_golden fixtures BUILD_DIR/testdata lacks (default: 1)
#   SHARED_DIR         the shared folder                                (default: <repo>/../shared)
#   PYTHON             Python with torch, for make_golden.py            (default: /usr/bin/python3)
#   XZ_LEVEL           xz preset                                        (default: 6)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
log() { echo "gpu_bundle: $*" >&2; }
die() { echo "gpu_bundle: ERROR: $*" >&2; exit 1; }

[[ $# -ge 1 && $# -le 2 && "$1" != "-h" && "$1" != "--help" ]] || {
  sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d' | sed 's/^# \{0,1\}//' >&2
  exit 2
}
[[ -d "$1" ]] || die "build directory $1 does not exist"
BUILD_DIR="$(cd "$1" && pwd)"
OUT_DIR="${2:-$ROOT/.gpu}"
mkdir -p "$OUT_DIR"
OUT_DIR="$(cd "$OUT_DIR" && pwd)"
TESTS_GLOBS="${BUNDLE_TESTS:-device_conformance* device_sampling*}"
BRICK_TINY="${BUNDLE_BRICK_TINY:-auto}"
LIMIT_MIB="${BUNDLE_LIMIT_MIB:-56}"
GOLDEN="${BUNDLE_GOLDEN:-1}"
SHARED_DIR="${SHARED_DIR:-$ROOT/../shared}"
PYTHON="${PYTHON:-/usr/bin/python3}"
XZ_LEVEL="${XZ_LEVEL:-6}"
MARKER=".brickserve-gpu-bundle"

for tool in ldd tar xz; do command -v "$tool" >/dev/null || die "$tool is needed"; done

# --- OUT_DIR: ours, empty, and ignored by git ---------------------------------------------------
if [[ -n "$(ls -A "$OUT_DIR")" && ! -e "$OUT_DIR/$MARKER" ]]; then
  die "$OUT_DIR is not empty and was not written by this script (no $MARKER): refusing to touch it"
fi
touch "$OUT_DIR/$MARKER"
case "$OUT_DIR/" in
  "$ROOT"/*)
    rel="${OUT_DIR#"$ROOT"/}"
    exclude="$(git -C "$ROOT" rev-parse --git-path info/exclude 2>/dev/null || echo .git/info/exclude)"
    [[ "$exclude" = /* ]] || exclude="$ROOT/$exclude"
    mkdir -p "$(dirname "$exclude")"
    for pat in "/$rel/" /gpu-out/; do  # the bundle; gpu_check.sh's default log folder
      if ! grep -qxF "$pat" "$exclude" 2>/dev/null; then
        echo "$pat" >>"$exclude"
        log "added $pat to $exclude"
      fi
    done
    if [[ -z "$(git -C "$ROOT" check-ignore "$OUT_DIR/$MARKER" 2>/dev/null)" ]]; then
      die "$OUT_DIR is not ignored by git: it would travel as untracked files (check $exclude)"
    fi
    ;;
  *) log "note: $OUT_DIR is outside the repo ($ROOT): the device tool carries only paths inside it" ;;
esac

STAGE="$(mktemp -d "${TMPDIR:-/tmp}/brickserve-gpu-stage.XXXXXX")"
trap 'rm -rf "$STAGE"' EXIT
mkdir -p "$STAGE"/{bin,tests,lib,lib-cxx,testdata,tokenizer}

# --- binaries ------------------------------------------------------------------------------------
find_bin() {  # name -> first executable of that name in BUILD_DIR (not under CMakeFiles)
  find "$BUILD_DIR" -path '*/CMakeFiles' -prune -o -type f -perm -u+x -name "$1" -print 2>/dev/null | sort | head -1
}
BINS=()
for name in brickserve engine_bench; do
  p="$(find_bin "$name")"
  [[ -n "$p" ]] || die "no $name in $BUILD_DIR (build it: cmake --build $BUILD_DIR --target $name)"
  BINS+=("$p")
done
p="$(find_bin membw)"; [[ -n "$p" ]] && BINS+=("$p")
# The CUDA backend as a dlopen'ed plugin (not in ldd's list of the binaries: added by name).
PLUGIN="$(find "$BUILD_DIR" -path '*/CMakeFiles' -prune -o -type f -name 'libbrickserve_cuda.so' -print 2>/dev/null | head -1)"
TESTS=()
for g in $TESTS_GLOBS; do
  while IFS= read -r p; do
    [[ -n "$p" ]] && TESTS+=("$p")
  done < <(find "$BUILD_DIR" -path '*/CMakeFiles' -prune -o -type f -perm -u+x -name "$g" -print 2>/dev/null | sort)
done
if ((${#TESTS[@]} == 0)); then
  log "WARNING: no test binaries matching '$TESTS_GLOBS' in $BUILD_DIR (configure with tests on and build them)"
fi
for p in "${BINS[@]}"; do cp "$p" "$STAGE/bin/"; done
for p in "${TESTS[@]}"; do cp "$p" "$STAGE/tests/"; done
if [[ -n "$PLUGIN" ]]; then
  cp "$PLUGIN" "$STAGE/lib/"
  log "CUDA plugin: $PLUGIN"
fi
log "binaries: $(cd "$STAGE" && echo bin/* tests/* | tr ' ' '\n' | grep -v '\*$' | tr '\n' ' ')"

# --- shared libraries ----------------------------------------------------------------------------
# glibc's own libraries and the dynamic loader stay behind (they must match the machine's kernel ABI
# and loader); so do the CUDA driver (installed with the GPU's driver) and the CUDA toolkit's
# libraries (multi-hundred-MB cuBLAS; the GPU image has the same CUDA 13 toolkit).
is_glibc() {
  case "$1" in
    linux-vdso.so*|ld-linux*.so*|libc.so.*|libm.so.*|libmvec.so.*|libpthread.so.*|libdl.so.*|librt.so.*|\
    libresolv.so.*|libutil.so.*|libanl.so.*|libnsl.so.*|libBrokenLocale.so.*|libthread_db.so.*) return 0 ;;
  esac
  return 1
}
is_cuda() {  # name path
  case "$1" in
    libcuda.so*|libnvidia-*|libnvcuvid.so*|libcudart.so*|libcublas.so*|libcublasLt.so*|libcufft*.so*|libcurand.so*|\
    libcusolver*.so*|libcusparse*.so*|libnvrtc*.so*|libnvJitLink.so*|libnccl.so*|libcudnn*.so*|libnvToolsExt.so*|\
    libnvtx*.so*|libcupti.so*|libnvperf*.so*) return 0 ;;
  esac
  case "$2" in /usr/local/cuda*|/opt/nvidia/*|/usr/local/nvidia/*) return 0 ;; esac
  return 1
}
declare -A COPIED=() CUDA_LIBS=()
MISSING=()
for f in "${BINS[@]}" "${TESTS[@]}" ${PLUGIN:+"$PLUGIN"}; do
  while IFS= read -r line; do
    # "libfoo.so.1 => /path/libfoo.so.1 (0x...)", "libbar.so => not found", "/lib64/ld-linux... (0x...)"
    name="$(awk '{print $1}' <<<"$line")"
    [[ -n "$name" ]] || continue
    if [[ "$line" == *"=> not found"* ]]; then
      is_cuda "$name" "" && { CUDA_LIBS["$name"]=1; continue; }
      MISSING+=("$name (needed by $(basename "$f"))")
      continue
    fi
    path="$(sed -n 's/.*=> \(\/[^ ]*\) (0x.*/\1/p' <<<"$line")"
    [[ -n "$path" ]] || continue
    base="$(basename "$name")"
    is_glibc "$base" && continue
    if is_cuda "$base" "$path"; then CUDA_LIBS["$base"]=1; continue; fi
    [[ -n "${COPIED[$base]:-}" ]] && continue
    case "$base" in
      libstdc++.so.*|libgcc_s.so.*) dest="$STAGE/lib-cxx/$base" ;;
      *) dest="$STAGE/lib/$base" ;;
    esac
    cp -L "$path" "$dest"
    chmod u+w "$dest"
    COPIED["$base"]="$path"
  done < <(ldd "$f" 2>&1 || true)
done
((${#MISSING[@]} == 0)) || die "unresolved libraries: ${MISSING[*]}"
CUDA_LIST="${!CUDA_LIBS[*]}"
log "libraries: ${#COPIED[@]} copied; expected on the GPU machine: ${CUDA_LIST:-none}"

# Strip: symbols are useless there (compute-sanitizer reports with -lineinfo / the source lines
# kept in the CUDA sections; strip leaves .nv_fatbin alone).
if command -v strip >/dev/null; then
  for f in "$STAGE"/bin/* "$STAGE"/tests/*; do [[ -f "$f" ]] && strip --strip-unneeded "$f" 2>/dev/null || true; done
  for f in "$STAGE"/lib/* "$STAGE"/lib-cxx/*; do [[ -f "$f" ]] && strip --strip-unneeded "$f" 2>/dev/null || true; done
else
  log "WARNING: strip not found: binaries stay unstripped"
fi

# --- glibc / libstdc++ versions needed ----------------------------------------------------------
GLIBC_MAX=unknown GLIBC_CXX_MAX=unknown GLIBCXX_MAX=unknown
if command -v objdump >/dev/null; then
  ver_max() { grep -o "$1"'_[0-9][0-9.]*' | sed "s/$1_//" | sort -u | sort -V | tail -1; }
  dump() { local f; for f in "$@"; do [[ -f "$f" ]] && objdump -T "$f" 2>/dev/null; done; }
  # Our binaries and libraries; separately the bundled libstdc++/libgcc_s (used there only when the
  # image's own libstdc++ is older than ours needs).
  GLIBC_MAX="$(dump "$STAGE"/bin/* "$STAGE"/tests/* "$STAGE"/lib/* | ver_max GLIBC)"
  GLIBC_CXX_MAX="$(dump "$STAGE"/lib-cxx/* | ver_max GLIBC)"
  GLIBCXX_MAX="$(dump "$STAGE"/bin/* "$STAGE"/tests/* "$STAGE"/lib/* | ver_max GLIBCXX)"
  GLIBC_MAX="${GLIBC_MAX:-none}" GLIBC_CXX_MAX="${GLIBC_CXX_MAX:-none}" GLIBCXX_MAX="${GLIBCXX_MAX:-none}"
  log "needs glibc $GLIBC_MAX and libstdc++ GLIBCXX_$GLIBCXX_MAX (the bundled libstdc++/libgcc_s need glibc $GLIBC_CXX_MAX)"
  newer_than_235() { [[ "$1" != none && "$(printf '%s\n2.35\n' "$1" | sort -V | tail -1)" != 2.35 ]]; }
  if newer_than_235 "$GLIBC_MAX"; then
    log "WARNING: the binaries need glibc $GLIBC_MAX, newer than 2.35: on an image with an older glibc they fail"
    log "         ('version GLIBC_$GLIBC_MAX not found'); gpu_check.sh's env stage prints the image's glibc"
  fi
  if newer_than_235 "$GLIBC_CXX_MAX"; then
    log "note: the bundled libstdc++ needs glibc $GLIBC_CXX_MAX: usable only on an image with that glibc, and needed"
    log "      only where the image's libstdc++ lacks GLIBCXX_$GLIBCXX_MAX (then neither works: build on an older distro)"
  fi
else
  log "WARNING: objdump not found (binutils): glibc symbol versions not checked"
fi

# --- test data -----------------------------------------------------------------------------------
if [[ -d "$BUILD_DIR/testdata" && -n "$(ls -A "$BUILD_DIR/testdata" 2>/dev/null)" ]]; then
  cp -a "$BUILD_DIR/testdata/." "$STAGE/testdata/"
  log "test data: $BUILD_DIR/testdata ($(du -sh "$STAGE/testdata" | cut -f1))"
fi
for fixture in golden lora_golden; do  # what the device tests read (tests/engine/CMakeLists.txt)
  [[ -n "$(ls -A "$STAGE/testdata/$fixture" 2>/dev/null)" || "$GOLDEN" != 1 ]] && continue
  if "$PYTHON" -c 'import torch' 2>/dev/null; then
    "$PYTHON" "$ROOT/tests/reference/make_${fixture}.py" --out "$STAGE/testdata/$fixture" >&2 ||
      die "tests/reference/make_${fixture}.py failed"
  else
    log "WARNING: $fixture not bundled ($PYTHON has no torch); gpu_check.sh writes it there"
  fi
done

# --- tokenizer -----------------------------------------------------------------------------------
TINY="$SHARED_DIR/models/brick-tiny"
if [[ -f "$TINY/tokenizer.json" ]]; then
  cp "$TINY/tokenizer.json" "$TINY/tokenizer_config.json" "$STAGE/tokenizer/"
else
  log "WARNING: $TINY/tokenizer.json not found: no tokenizer bundled (hf check and benches need one)"
fi

# --- manifest ------------------------------------------------------------------------------------
CACHE="$BUILD_DIR/CMakeCache.txt"
cache_get() { sed -n "s/^$1:[A-Z]*=//p" "$CACHE" 2>/dev/null | head -1; }
SRC_DIR="$(cache_get CMAKE_HOME_DIRECTORY)"; SRC_DIR="${SRC_DIR:-$ROOT}"
# Paths compiled into the tests (tests/CMakeLists.txt): BRICKSERVE_TEST_DATA_DIR, BRICKSERVE_SHARED_DIR.
SHARED_COMPILED="$(cd "$SRC_DIR/.." && pwd)/shared"
CUDA_LINKED=no  # the plugin (engine/backend/cuda_plugin.h), or CUDA linked into the binary itself
if [[ -n "$PLUGIN" ]]; then CUDA_LINKED=plugin
elif ldd "${BINS[0]}" 2>/dev/null | grep -q 'libcublas'; then CUDA_LINKED=yes; fi
# The GPU code in the binaries: from the compile flags (CMAKE_CUDA_ARCHITECTURES is not cached).
CUDA_ARCHS="$(cat "$BUILD_DIR"/engine/CMakeFiles/*/flags.make 2>/dev/null | grep -oE 'code=\[?[a-z_0-9,]*sm_[0-9]+a?' |
  grep -oE 'sm_[0-9]+a?' | sort -u | tr '\n' ' ')"
GIT_REV="$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)"
GIT_DIRTY="$(git -C "$ROOT" status --porcelain --untracked-files=no 2>/dev/null | wc -l)"
{
  echo "# written by scripts/gpu_bundle.sh; read by scripts/gpu_check.sh"
  echo "BUNDLE_CREATED='$(date -u +%Y-%m-%dT%H:%M:%SZ)'"
  echo "BUNDLE_GIT='$GIT_REV (+$GIT_DIRTY modified tracked files)'"
  echo "BUNDLE_BUILD_DIR='$BUILD_DIR'"
  echo "BUNDLE_BUILD_TYPE='$(cache_get CMAKE_BUILD_TYPE)'"
  echo "BUNDLE_TEST_DATA_DIR='$BUILD_DIR/testdata'"
  echo "BUNDLE_SHARED_DIR='$SHARED_COMPILED'"
  echo "BUNDLE_CUDA_LINKED='$CUDA_LINKED'"
  echo "BUNDLE_CUDA_ARCHITECTURES='$CUDA_ARCHS'"
  echo "BUNDLE_CUDA_LIBS='$CUDA_LIST'"
  echo "BUNDLE_GLIBC_MAX='$GLIBC_MAX'"
  echo "BUNDLE_GLIBC_CXX_MAX='$GLIBC_CXX_MAX'"
  echo "BUNDLE_GLIBCXX_MAX='$GLIBCXX_MAX'"
  echo "BUNDLE_BINS='$(cd "$STAGE/bin" && ls | tr '\n' ' ')'"
  echo "BUNDLE_TESTS='$(cd "$STAGE/tests" && ls | tr '\n' ' ')'"
  echo "BUNDLE_CUDA_PLUGIN='${PLUGIN:+libbrickserve_cuda.so}'"
} >"$STAGE/manifest.env"
[[ "$CUDA_LINKED" != no ]] || log "WARNING: no CUDA backend in $BUILD_DIR (no libbrickserve_cuda.so): a CPU-only build (a dry run)"

# --- pack ----------------------------------------------------------------------------------------
rm -f "$OUT_DIR/bundle.tar.xz" "$OUT_DIR/bundle.tar.xz.partial" "$OUT_DIR/manifest.env"
UNPACKED="$(du -sb "$STAGE" | cut -f1)"
tar -C "$STAGE" -cf - . | xz -T0 "-$XZ_LEVEL" >"$OUT_DIR/bundle.tar.xz.partial"
mv "$OUT_DIR/bundle.tar.xz.partial" "$OUT_DIR/bundle.tar.xz"
cp "$STAGE/manifest.env" "$OUT_DIR/manifest.env"
mib() { awk -v b="$1" 'BEGIN { printf "%.1f", b / 1048576 }'; }
size_of() { du -cb "$@" 2>/dev/null | tail -1 | cut -f1; }
log "bundle.tar.xz: $(mib "$(size_of "$OUT_DIR/bundle.tar.xz")") MiB packed ($(mib "$UNPACKED") MiB unpacked)"

# brick-tiny: packed once into BUILD_DIR (reused while the source is unchanged), copied in if it fits.
TINY_AR="$OUT_DIR/brick-tiny.tar.xz"
TINY_CACHE="$BUILD_DIR/gpu-bundle-cache/brick-tiny.tar.xz"
LIMIT_B=$((LIMIT_MIB * 1048576))
rm -f "$TINY_AR"
if [[ "$BRICK_TINY" != 0 && ! -f "$TINY/model.safetensors" ]]; then
  [[ "$BRICK_TINY" == 1 ]] && die "BUNDLE_BRICK_TINY=1 but $TINY/model.safetensors is missing"
  log "brick-tiny: not found at $TINY (not bundled)"
elif [[ "$BRICK_TINY" != 0 ]]; then
  if [[ ! -f "$TINY_CACHE" || "$TINY/model.safetensors" -nt "$TINY_CACHE" ]]; then
    log "brick-tiny: packing $TINY into $TINY_CACHE (once; about 30 s)"
    mkdir -p "$(dirname "$TINY_CACHE")"
    files=(config.json generation_config.json model.safetensors tokenizer.json tokenizer_config.json reference)
    tar -C "$TINY" -cf - "${files[@]}" | xz -T0 -"$XZ_LEVEL" >"$TINY_CACHE.partial"
    mv "$TINY_CACHE.partial" "$TINY_CACHE"
  fi
  if (($(size_of "$OUT_DIR") + $(size_of "$TINY_CACHE") <= LIMIT_B)) || [[ "$BRICK_TINY" == 1 ]]; then
    cp "$TINY_CACHE" "$TINY_AR"
  else
    log "note: brick-tiny ($(mib "$(size_of "$TINY_CACHE")") MiB) left out: the bundle would pass $LIMIT_MIB MiB"
    log "      (tests reading ../shared/models/brick-tiny skip there; the kit's default tests do not read it)"
  fi
fi

TOTAL="$(size_of "$OUT_DIR")"
echo "gpu_bundle: $OUT_DIR: $(mib "$TOTAL") MiB to carry (limit $LIMIT_MIB MiB; the device tool's is 64 MiB with the repo):"
(cd "$OUT_DIR" && ls -l --time-style=+ | tail -n +2 | awk '{printf "  %10d  %s\n", $5, $NF}')
if ((TOTAL > LIMIT_B)); then
  die "the bundle is $(mib "$TOTAL") MiB, above the $LIMIT_MIB MiB limit: drop brick-tiny (BUNDLE_BRICK_TINY=0), fewer tests (BUNDLE_TESTS), or build with -DBRICKSERVE_BUILD_SERVER=OFF"
fi
echo "gpu_bundle: carry it with the device tool's run: carry [\"${OUT_DIR#"$ROOT"/}\"], command scripts/gpu_check.sh"
