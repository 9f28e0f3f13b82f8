# hegnn-serve: `hegnn serve` (the same command as `make run`) on the checkpoints in
# checkpoints/, as a non-root user, on port 8000.
#
# CPU image (the default: torch's CPU wheel):
#   docker build -t hegnn-serve:cpu .
# GPU image: PyPI's Linux torch wheel is built with CUDA and brings the CUDA libraries
# with it, so the slim base only needs the host's NVIDIA driver and container toolkit:
#   docker build -t hegnn-serve:cuda --build-arg TORCH_INDEX_URL=https://pypi.org/simple .
# or on a CUDA base image, with the wheel for its CUDA version (Python then comes from
# the distribution and must be >= 3.11; Ubuntu 24.04 has 3.12):
#   docker build -t hegnn-serve:cuda \
#     --build-arg BASE_IMAGE=nvidia/cuda:12.8.1-cudnn-runtime-ubuntu24.04 \
#     --build-arg TORCH_INDEX_URL=https://download.pytorch.org/whl/cu128 .
# Run (checkpoints are in the image; mount a folder over them to serve others):
#   docker run --rm -p 8000:8000 hegnn-serve:cpu
#   docker run --rm -p 8000:8000 -v "$PWD/checkpoints:/app/checkpoints:ro" hegnn-serve:cpu
#   docker run --rm --gpus all -p 8000:8000 -e HEGNN_DEVICE=cuda hegnn-serve:cuda
# Settings come from HEGNN_* variables (-e); host, port and checkpoints are set below.

ARG BASE_IMAGE=python:3.11-slim-bookworm
FROM ${BASE_IMAGE}

ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH

# A CUDA base image has no Python: take the distribution's. The virtual environment
# keeps pip away from the system's packages on either base.
RUN if ! command -v python3 >/dev/null; then \
        apt-get update \
        && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
            python3 python3-venv \
        && rm -rf /var/lib/apt/lists/*; \
    fi \
    && python3 -m venv /opt/venv \
    && useradd --create-home --uid 10001 --shell /usr/sbin/nologin hegnn

# Dependencies in their own layer, rebuilt only when pyproject.toml changes: torch
# first and pinned (as in the Makefile) from TORCH_INDEX_URL, then the base (client)
# dependencies and the `serve` extra read from pyproject.toml, which the installed
# torch satisfies.
WORKDIR /src
COPY pyproject.toml ./
RUN pip install torch==2.13.0 --index-url "${TORCH_INDEX_URL}" \
    && python -c "import tomllib; p = tomllib.load(open('pyproject.toml', 'rb'))['project']; print('\n'.join(p['dependencies'] + p['optional-dependencies']['serve']))" > requirements.txt \
    && pip install -r requirements.txt

# The project itself (not editable); its dependencies are in place already. Serving
# needs the model library, the service and the `hegnn` command only: training/ and
# benchmarks/ stay out of the image (`hegnn serve` imports neither; setup.py installs
# the folders that are present).
COPY README.md setup.py ./
COPY hegnn ./hegnn
COPY hegnn_cli ./hegnn_cli
COPY service ./service
RUN pip install --no-deps . \
    && pip check \
    && rm -rf /src

# Shipped checkpoints, owned by root and readable by the service user (safetensors
# writes weights with mode 0600; COPY keeps the mode).
WORKDIR /app
COPY checkpoints/ ./checkpoints/
RUN chmod -R a+rX,go-w /app/checkpoints

USER hegnn
EXPOSE 8000
# No curl in slim images: probe with the Python that runs the service.
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=4)"]
ENTRYPOINT ["hegnn"]
CMD ["serve", "--host", "0.0.0.0", "--port", "8000", "--checkpoints", "/app/checkpoints"]
