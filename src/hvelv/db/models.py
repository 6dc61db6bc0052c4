"""Imports every model so that the metadata is complete (migrations, tests)."""

from hvelv.audit import models as audit_models
from hvelv.consent import models as consent_models
from hvelv.datasets import models as dataset_models
from hvelv.db.base import Base
from hvelv.files import models as file_models
from hvelv.identity import models as identity_models
from hvelv.notify import models as notify_models
from hvelv.projects import models as project_models

__all__ = [
    "Base",
    "audit_models",
    "consent_models",
    "dataset_models",
    "file_models",
    "identity_models",
    "notify_models",
    "project_models",
]
