# One image for every inferq service; the compose file picks the process with `command`.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1
WORKDIR /app
COPY pyproject.toml README.md ./
COPY shared ./shared
COPY services ./services
COPY inferq ./inferq
COPY examples ./examples
RUN pip install . && useradd --system --uid 10001 --home /app inferq
USER inferq
EXPOSE 8000
CMD ["python", "-m", "services.ingest"]
