.PHONY: run test crds

run:  ## build what is missing, start llama-server and the gateway on examples/
	MODEL="$(MODEL)" hack/quickstart.sh

test:  ## lint, type-check and run every test
	hack/test.sh

crds:  ## regenerate crds/ from the pydantic models
	.venv/bin/llmrouter crds
