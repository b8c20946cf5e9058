# dsv3-serve image: build on Debian bookworm with the CUDA 13 toolkit from NVIDIA's debian12
# repository (the same Debian packages as scripts/install-deps.sh, so the image builds exactly
# what CI builds), then copy the binaries and the demo model into a bookworm-slim runtime with
# only the CUDA and Debian shared libraries they load. The NVIDIA container toolkit supplies the
# driver at run time. scripts/check-dockerfile.py checks this file against a build on every CI
# run (there is no container engine there): what the runtime copies, the flags, the user.
#
#   docker build -t dsv3-serve:0.1.0 .
#   docker run --gpus all -p 50051:50051 -p 8000:8000 -p 9090:9090 dsv3-serve:0.1.0   # demo model
#   docker run --gpus all --shm-size 16g -p 50051:50051 -p 8000:8000 -p 9090:9090 \
#       -v /models:/models:ro dsv3-serve:0.1.0 --model /models/DeepSeek-V3 --tp 8 \
#       --listen 0.0.0.0:50051 --http-listen 0.0.0.0:8000 --metrics-listen 0.0.0.0:9090
ARG CUDA_REPO=https://developer.download.nvidia.com/compute/cuda/repos/debian12/x86_64

FROM debian:bookworm AS build
ARG CUDA_REPO
ENV DEBIAN_FRONTEND=noninteractive
RUN apt-get update -qq \
 && apt-get install -y -qq --no-install-recommends ca-certificates curl \
 && curl -fsSL -o /tmp/cuda-keyring.deb ${CUDA_REPO}/cuda-keyring_1.1-1_all.deb \
 && dpkg -i /tmp/cuda-keyring.deb && rm /tmp/cuda-keyring.deb \
 && apt-get update -qq \
 && apt-get install -y -qq --no-install-recommends \
      cuda-nvcc-13-0 cuda-cudart-dev-13-0 libcublas-dev-13-0 libnccl-dev \
 && rm -rf /var/lib/apt/lists/*
COPY scripts/install-deps.sh /tmp/install-deps.sh
RUN /tmp/install-deps.sh && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN cmake -S . -B build -G Ninja -DDSV3_CUDA=ON -DCMAKE_BUILD_TYPE=Release \
      -DCMAKE_CUDA_COMPILER=/usr/local/cuda/bin/nvcc \
      -DDSV3_DEFAULT_MODEL_DIR=/usr/local/share/dsv3-serve/dsv3-demo-fp8 \
 && ninja -C build dsv3-server dsv3-generate dsv3-client
# Staging: the runtime stage copies /out/bin and /out/share only.
RUN install -D -t /out/bin build/server/dsv3-server build/tools/dsv3-generate \
      build/tools/dsv3-client \
 && install -d /out/share && cp -r build/data/demo-model/dsv3-demo-fp8 /out/share/

FROM debian:bookworm-slim AS runtime
ARG CUDA_REPO
ENV DEBIAN_FRONTEND=noninteractive
RUN apt-get update -qq \
 && apt-get install -y -qq --no-install-recommends ca-certificates curl \
 && curl -fsSL -o /tmp/cuda-keyring.deb ${CUDA_REPO}/cuda-keyring_1.1-1_all.deb \
 && dpkg -i /tmp/cuda-keyring.deb && rm /tmp/cuda-keyring.deb \
 && apt-get update -qq \
 && apt-get install -y -qq --no-install-recommends \
      cuda-cudart-13-0 libcublas-13-0 libnccl2 \
      libabsl20220623 libgrpc++1.51 libgrpc29 libprotobuf32 libre2-9 libc-ares2 libssl3 \
      libspdlog1.10 libfmt9 libopenblas0-pthread libpcre2-8-0 libgloo0 libcpp-httplib0.11 \
      libbrotli1 zlib1g \
 && apt-get purge -y -qq curl && apt-get autoremove -y -qq \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 10001 dsv3 \
 && useradd --system --uid 10001 --gid 10001 --create-home --home-dir /home/dsv3 \
      --shell /usr/sbin/nologin dsv3 \
 && install -d -o 10001 -g 10001 -m 0700 /home/dsv3/.cache
COPY --from=build /out/bin/ /usr/local/bin/
# The embedded demo model, served when no --model is given.
COPY --from=build /out/share/ /usr/local/share/dsv3-serve/
# HOME and the cache belong to the runtime user: CUDA keeps its JIT cache of kernels there, and
# libraries that look for $HOME must not fail on a missing one. A read-only root filesystem
# (deploy/k8s) mounts an emptyDir on /home/dsv3/.cache.
ENV NVIDIA_VISIBLE_DEVICES=all NVIDIA_DRIVER_CAPABILITIES=compute,utility \
    LD_LIBRARY_PATH=/usr/local/cuda/lib64:/usr/local/cuda/lib \
    HOME=/home/dsv3 XDG_CACHE_HOME=/home/dsv3/.cache CUDA_CACHE_PATH=/home/dsv3/.cache/nv
USER 10001:10001
WORKDIR /home/dsv3
# gRPC, the OpenAI-compatible HTTP API, Prometheus metrics, and the rendezvous port of
# multi-node groups (MASTER_PORT).
EXPOSE 50051 8000 9090 29500
# SERVING once the model is loaded; a large checkpoint takes minutes, hence the start period.
HEALTHCHECK --interval=30s --timeout=5s --start-period=10m --retries=3 \
  CMD ["/usr/local/bin/dsv3-client", "--server", "127.0.0.1:50051", "--health", "--timeout-s", "4"]
ENTRYPOINT ["/usr/local/bin/dsv3-server"]
# Without --model: the embedded demo model, on the GPU when one is visible (--device auto).
# Arguments given to `docker run` (or a pod's args) replace these, so repeat them there.
CMD ["--listen", "0.0.0.0:50051", "--http-listen", "0.0.0.0:8000", "--metrics-listen", "0.0.0.0:9090", \
     "--device", "auto"]
