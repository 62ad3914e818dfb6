# One image for every inferq service; the compose file picks the process with `command`.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1
WORKDIR /app
COPY pyproject.toml README.md ./
COPY shared ./shared
COPY services ./services
COPY inferq ./inferq
COPY examples ./examples
# Optional extras of pyproject.toml, e.g. `modal` for a dispatcher that drives Modal GPU workers
# (docker-compose.modal.yml sets it); empty installs the project alone.
ARG INFERQ_EXTRAS=""
RUN pip install .${INFERQ_EXTRAS:+"[$INFERQ_EXTRAS]"} && useradd --system --uid 10001 --home /app inferq
USER inferq
EXPOSE 8000
CMD ["python", "-m", "services.ingest"]
