"""Custom resource types of the llmrouter.io API group, as pydantic models.

The CRD YAML under crds/ is generated from these models (``llmrouter crds``).
"""

from llmrouter.operator.api.common import GROUP, VERSION, ObjectMeta
from llmrouter.operator.api.modeldeployment import ModelDeployment, ModelDeploymentSpec
from llmrouter.operator.api.tenant import Tenant, TenantSpec

__all__ = [
    "GROUP",
    "VERSION",
    "ModelDeployment",
    "ModelDeploymentSpec",
    "ObjectMeta",
    "Tenant",
    "TenantSpec",
]
