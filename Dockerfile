# brickserve images, two targets (deploy/README.md):
#   docker build --target cuda -t brickserve:cuda .   NVIDIA GPUs: CUDA 13 on Ubuntu 24.04
#   docker build --target cpu  -t brickserve:cpu  .   CPU only: Debian 12 (also the default target)
# Each builder runs scripts/setup.sh (SKIP_TEST_DEPS=1: no test tooling such as torch or node),
# the same install-and-build as a developer machine (Ubuntu 24.04
# ships the gRPC 1.51 / protobuf 3.21 / abseil 20220623 that Debian 12 does). Each runtime holds the
# binary and the shared libraries it links, and runs as uid 10001 with the model mounted at /models.
# x86_64 only: the build looks for OpenBLAS under /usr/lib/x86_64-linux-gnu.
ARG CUDA_VERSION=13.0.0

# ---- CUDA ---------------------------------------------------------------------------------------
FROM nvidia/cuda:${CUDA_VERSION}-devel-ubuntu24.04 AS cuda-build
# GPU generations to compile kernels for: A100, A10/A40, L4/L40S, H100/H200, B200, RTX 50xx.
ARG CUDA_ARCHITECTURES="80;86;89;90;100;120"
WORKDIR /src
COPY . .
RUN SKIP_TEST_DEPS=1 BUILD_DIR=/src/build \
    CMAKE_ARGS="-DBRICKSERVE_BUILD_TESTS=OFF -DBRICKSERVE_BUILD_BENCH=OFF -DBRICKSERVE_CUDA=ON \
                -DCMAKE_CUDA_ARCHITECTURES=${CUDA_ARCHITECTURES}" \
    bash scripts/setup.sh

FROM nvidia/cuda:${CUDA_VERSION}-runtime-ubuntu24.04 AS cuda
# Ubuntu 24.04 names of the Debian 12 runtime libraries (the t64 ABI rename, ICU 74).
RUN apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      libabsl20220623t64 libicu74 libhwy1t64 libopenblas0-pthread libstdc++6 'libgrpc++1.51t64' \
      libprotobuf32t64 libcivetweb1 libssl3t64 \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --system --gid 10001 brickserve \
    && useradd --system --uid 10001 --gid 10001 --no-create-home --shell /usr/sbin/nologin brickserve \
    && mkdir -p /models /bricks
COPY --from=cuda-build /src/build/server/brickserve /usr/local/bin/brickserve
# The CUDA backend plugin, next to the binary, where brickserve looks for it first.
COPY --from=cuda-build /src/build/engine/libbrickserve_cuda.so /usr/local/bin/libbrickserve_cuda.so
# Numeric, so Kubernetes' runAsNonRoot can verify it.
USER 10001:10001
VOLUME ["/models", "/bricks"]
# gRPC, and the HTTP side port: /metrics, /healthz, /readyz.
EXPOSE 50051 9464
# bash's /dev/tcp instead of installing curl: nothing added to the image, and /readyz (200 once the
# model is loaded and gRPC accepts calls, 503 while starting or draining) is what "healthy" means.
# It assumes the metrics port 9464 of the CMD below; a different --metrics-listen needs --health-cmd.
HEALTHCHECK --interval=15s --timeout=5s --start-period=5m --retries=3 \
    CMD ["bash", "-c", "exec 3<>/dev/tcp/127.0.0.1/9464 && printf 'GET /readyz HTTP/1.0\\r\\n\\r\\n' >&3 && read -r -t 4 _ code _ <&3 && [ \"$code\" = 200 ]"]
ENTRYPOINT ["/usr/local/bin/brickserve"]
# --device auto: the GPU when the container has one (docker run --gpus all), else the CPU.
CMD ["serve", "--model", "/models", "--listen", "0.0.0.0:50051", "--metrics-listen", "0.0.0.0:9464", "--device", "auto"]

# ---- CPU ----------------------------------------------------------------------------------------
FROM debian:12 AS cpu-build
WORKDIR /src
COPY . .
RUN SKIP_TEST_DEPS=1 BUILD_DIR=/src/build \
    CMAKE_ARGS="-DBRICKSERVE_BUILD_TESTS=OFF -DBRICKSERVE_BUILD_BENCH=OFF -DBRICKSERVE_CUDA=OFF" \
    bash scripts/setup.sh

FROM debian:12-slim AS cpu
RUN apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      libabsl20220623 libicu72 libhwy1 libopenblas0-pthread libstdc++6 'libgrpc++1.51' libprotobuf32 \
      libcivetweb1 libssl3 \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --system --gid 10001 brickserve \
    && useradd --system --uid 10001 --gid 10001 --no-create-home --shell /usr/sbin/nologin brickserve \
    && mkdir -p /models /bricks
COPY --from=cpu-build /src/build/server/brickserve /usr/local/bin/brickserve
USER 10001:10001
VOLUME ["/models", "/bricks"]
EXPOSE 50051 9464
# Same check as the cuda target (see there for why bash and /readyz).
HEALTHCHECK --interval=15s --timeout=5s --start-period=5m --retries=3 \
    CMD ["bash", "-c", "exec 3<>/dev/tcp/127.0.0.1/9464 && printf 'GET /readyz HTTP/1.0\\r\\n\\r\\n' >&3 && read -r -t 4 _ code _ <&3 && [ \"$code\" = 200 ]"]
ENTRYPOINT ["/usr/local/bin/brickserve"]
CMD ["serve", "--model", "/models", "--listen", "0.0.0.0:50051", "--metrics-listen", "0.0.0.0:9464"]
