.PHONY: run test crds lint

run:  ## build what is missing, start llama-server and the gateway on examples/
	hack/quickstart.sh

test:  ## lint, type-check and run every test
	hack/test.sh

crds:  ## regenerate crds/ from the pydantic models
	.venv/bin/llmrouter crds
