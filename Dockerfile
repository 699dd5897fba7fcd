# syntax=docker/dockerfile:1
# pinserve's container image: one binary, ONNX Runtime's library and git, no model (an init
# container running `pinserve fetch` fills /models; see README.md, "Container image").
#
#   docker build -t pinserve:0.1.0 .                                  # CPU
#   docker build --build-arg VARIANT=cuda -t pinserve:0.1.0-cuda .    # CUDA 13, cuDNN 9
#
# Each RUN is a script in scripts/image/; scripts/check-image.sh lints this file, checks that it
# still runs exactly those scripts, and runs the two that build the image's own files into a
# directory laid out as the image to serve a model from it read-only, so the image and its check
# cannot drift apart without a Docker engine (the third installs git from the base's packages).

ARG VARIANT=cpu

# Built on the oldest glibc of the runtime bases below (bookworm's 2.36; trixie has 2.41, Ubuntu
# 24.04 2.39), so one binary runs on either.
FROM rust:1.95-bookworm AS build
ARG VARIANT
WORKDIR /src
COPY . .
RUN scripts/image/build.sh "$VARIANT" /out/usr/local

FROM python:3.11-slim-bookworm AS onnxruntime
ARG VARIANT
WORKDIR /src
COPY scripts/image/install-onnxruntime.sh scripts/image/
RUN scripts/image/install-onnxruntime.sh "$VARIANT" /out/usr/local

# BuildKit pulls only the base that VARIANT selects.
FROM debian:trixie-slim AS runtime-cpu
FROM nvidia/cuda:13.0.2-cudnn-runtime-ubuntu24.04 AS runtime-cuda

# DL3006 (untagged image): runtime-${VARIANT} names one of the two stages just above, each tagged.
# hadolint ignore=DL3006
FROM runtime-${VARIANT}
LABEL org.opencontainers.image.title="pinserve" \
      org.opencontainers.image.description="A lean model-serving runtime for GitOps: pinned model versions, honest readiness, ONNX Runtime, Open Inference Protocol" \
      org.opencontainers.image.version="0.1.0" \
      org.opencontainers.image.licenses="Apache-2.0"
# Registries and object stores are reached over TLS with the system's roots; slim bases lack them.
COPY --from=build /etc/ssl/certs/ca-certificates.crt /etc/ssl/certs/ca-certificates.crt
COPY --from=onnxruntime /out/usr/local/lib/ /usr/local/lib/
COPY --from=build /out/usr/local/bin/pinserve /usr/local/bin/pinserve
# git for `pinserve promote` in the retraining pipeline (k8s/pipelines); the script is mounted, not
# copied, so it does not stay in the image.
RUN --mount=type=bind,source=scripts/image/install-git.sh,target=/tmp/install-git.sh /tmp/install-git.sh
# Nothing is written outside volumes: serving --model-dir writes nothing, and the default cache
# of in-process fetches (~/.cache/pinserve) lands in /tmp, an emptyDir under a read-only root.
ENV HOME=/tmp
USER 65532:65532
EXPOSE 8080 8081
ENTRYPOINT ["pinserve"]
CMD ["serve", "--model-dir", "/models"]
