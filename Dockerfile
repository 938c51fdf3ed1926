# CPU image: builds with the same script as a developer machine (scripts/setup.sh) and runs
# `brickserve serve` as a non-root user on the model mounted at /models. The CUDA build stages and a
# HEALTHCHECK on gRPC health arrive with the GPU and operations issues.
FROM debian:12 AS build
WORKDIR /src
COPY . .
RUN BUILD_DIR=/src/build CMAKE_ARGS="-DBRICKSERVE_BUILD_TESTS=OFF -DBRICKSERVE_BUILD_BENCH=OFF -DBRICKSERVE_CUDA=OFF" \
    bash scripts/setup.sh

FROM debian:12-slim AS cpu
RUN apt-get update && apt-get install -y --no-install-recommends \
      libabsl20220623 libicu72 libhwy1 libopenblas0-pthread libstdc++6 'libgrpc++1.51' libprotobuf32 \
    && rm -rf /var/lib/apt/lists/* && useradd --system --uid 10001 brickserve
COPY --from=build /src/build/server/brickserve /usr/local/bin/brickserve
USER brickserve
VOLUME ["/models"]
EXPOSE 50051
ENTRYPOINT ["/usr/local/bin/brickserve"]
CMD ["serve", "--model", "/models", "--listen", "0.0.0.0:50051"]
