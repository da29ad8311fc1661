FROM python:3.11-slim
WORKDIR /app
ENV PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1 HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false \
    ENGRAM_DATA_DIR=/app/.engram
# The processes run as `engram` (uid 10001), not root: the code and the installed packages stay
# root's, read-only to them. What they write is ENGRAM_DATA_DIR (the embedding model's export,
# the collected static files, the export spool) and /tmp (beat's schedule, the heartbeat file,
# the metrics folder).
RUN useradd --create-home --uid 10001 --user-group engram
COPY pyproject.toml ./
COPY . .
# Pinned torch; set PIP_EXTRA_INDEX_URL at build time to a CPU wheel index to keep the image small.
RUN pip install --no-cache-dir torch==2.13.0 \
 && pip install --no-cache-dir . \
 && python -m compileall -q /app \
 && install -d -o engram -g engram /app/.engram
USER 10001:10001
# The embedding model's ONNX export and its int8 graph, made once here: web and worker load
# them without torch.
RUN python -m memory.embeddings.prepare
# The admin's static files, served by the app itself (WhiteNoise); collecting connects to nothing.
RUN DATABASE_URL=postgres://collectstatic@localhost/none REDIS_URL=redis://localhost/0 \
    DJANGO_SETTINGS_MODULE=config.settings.base python manage.py collectstatic --noinput -v0
EXPOSE 8000
