# One image for the studio and its GPU workers.
FROM python:3.11-slim
ENV PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1
WORKDIR /app
# torch first: on Linux x86_64 PyPI's build carries CUDA, which the GPU workers need.
RUN pip install torch==2.13.0
COPY pyproject.toml README.md alembic.ini ./
COPY studio ./studio
COPY worker ./worker
COPY migrations ./migrations
RUN pip install ".[gpu]"
ENV STUDIO_DATA_DIR=/data
EXPOSE 7860
CMD ["studio", "serve", "--host", "0.0.0.0", "--port", "7860"]
