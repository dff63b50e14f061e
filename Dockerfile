# vae-dogs service on CPU: docker build -t vae-dogs . && docker run -p 8000:8000 vae-dogs
# The default checkpoint is baked in; no dog photo is (see .dockerignore).
FROM python:3.11-slim

ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    VAE_DOGS_CHECKPOINT=/srv/vae-dogs/checkpoints/dogs120

WORKDIR /srv/vae-dogs

# CPU-only torch first (a few hundred MB instead of the multi-GB CUDA wheels).
RUN pip install --index-url "${TORCH_INDEX_URL}" "torch==2.14.1" "torchvision==0.29.1"

COPY pyproject.toml README.md ./
COPY model ./model
COPY training ./training
COPY app ./app
RUN pip install .

COPY checkpoints/dogs120/model.safetensors checkpoints/dogs120/card.json ./checkpoints/dogs120/

RUN useradd --system --uid 10001 --no-create-home vae
USER 10001

EXPOSE 8000
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/health', timeout=4)"]
ENV HOST=0.0.0.0 PORT=8000
# vae-dogs-serve: uvicorn with the VAE_DOGS_LIMIT_CONCURRENCY and VAE_DOGS_TIMEOUT_KEEP_ALIVE_S settings
CMD ["vae-dogs-serve"]
