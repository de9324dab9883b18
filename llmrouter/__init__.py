"""llmrouter: a Kubernetes-native, multi-tenant LLM gateway."""

__version__ = "0.1.0"
