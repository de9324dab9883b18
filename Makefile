.PHONY: run test crds

run:  ## build what is missing, start llama-server and the gateway on examples/
	MODEL="$(MODEL)" hack/quickstart.sh

test:  ## lint, type-check and run every test
	hack/test.sh

crds:  ## regenerate crds/ (and the chart's copy) from the pydantic models
	.venv/bin/llmrouter crds --out crds
	.venv/bin/llmrouter crds --out charts/llmrouter/crds
