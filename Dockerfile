# The llmrouter image: `llmrouter operator` and `llmrouter gateway` (the chart runs both).
# Not built by CI here (no container engine on these machines).
FROM python:3.11-slim
WORKDIR /src
COPY pyproject.toml README.md ./
COPY llmrouter llmrouter
COPY operator operator
COPY gateway gateway
RUN pip install --no-cache-dir . && rm -rf /src
USER 65534
ENTRYPOINT ["llmrouter"]
