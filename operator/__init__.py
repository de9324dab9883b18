"""Control plane: custom resource types, the config compiler and the Kopf operator."""
