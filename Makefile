.PHONY: run test bench crds image

run:  ## build what is missing, start llama-server and the gateway on examples/
	MODEL="$(MODEL)" SMOKE="$(SMOKE)" hack/quickstart.sh

test:  ## lint, type-check and run every test
	hack/test.sh

# SMOKE=1: only check that it runs (seconds, no LiteLLM, hence none of its heavy tools).
bench:  ## llmrouter, an aiohttp floor and LiteLLM side by side on this machine (a quiet one)
	hack/system-deps.sh && hack/venv.sh >/dev/null && hack/bench-tools.sh $(if $(SMOKE),--smoke)
	.venv/bin/python hack/bench_compare.py $(if $(SMOKE),--smoke,--seconds 8)

crds:  ## regenerate crds/ (and the chart's copy) from the pydantic models
	.venv/bin/llmrouter crds --out crds
	.venv/bin/llmrouter crds --out charts/llmrouter/crds

image:  ## the OCI image, without a container engine (needs root); prints the folder of its layout
	hack/system-deps.sh && hack/venv.sh >/dev/null && hack/build-image.sh
