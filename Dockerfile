# The llmrouter image (`llmrouter operator` and `llmrouter gateway`; the chart runs both) for
# those who build with Docker. `make image` (hack/build-image.sh) builds the same image with
# no container engine; tests/unit/test_image_facts.py checks that both state the same base,
# user, entrypoint, environment and labels (hack/oci_image.py holds them).
FROM debian:bookworm AS build
RUN apt-get update && apt-get install -y --no-install-recommends python3 python3-pip
COPY pyproject.toml README.md /src/
COPY llmrouter /src/llmrouter
COPY operator /src/operator
COPY gateway /src/gateway
RUN python3 -m pip install --break-system-packages --no-compile \
      --target /out/usr/lib/python3/dist-packages /src \
 && rm -rf /out/usr/lib/python3/dist-packages/bin \
 && python3 -m compileall -q --invalidation-mode unchecked-hash -s /out -p / /out

FROM debian:bookworm
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 ca-certificates libstdc++6 \
 && rm -rf /var/lib/apt/lists/* \
 && python3 -m compileall -q --invalidation-mode unchecked-hash /usr/lib/python3.11 \
 && groupadd -g 65532 llmrouter \
 && useradd -u 65532 -g 65532 -d /home/llmrouter -m -s /usr/sbin/nologin llmrouter
COPY --from=build /out/ /
COPY hack/image/llmrouter /usr/local/bin/llmrouter
ENV PATH=/usr/local/bin:/usr/bin:/bin \
    LANG=C.UTF-8 \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
LABEL org.opencontainers.image.title="llmrouter" \
      org.opencontainers.image.description="Kubernetes-native, multi-tenant LLM gateway: `llmrouter operator` and `llmrouter gateway`" \
      org.opencontainers.image.version="0.1.0" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.base.name="debian:bookworm"
USER 65532:65532
WORKDIR /home/llmrouter
ENTRYPOINT ["/usr/local/bin/llmrouter"]
CMD ["--help"]
