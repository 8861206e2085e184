"""Every table model of every package, imported in one place.

Alembic's autogenerate and ``create_all`` see only imported models; a missing import
here would make autogenerate propose dropping that table.
"""

from aixiate_audit import models as audit_models
from aixiate_auth import models as auth_models
from aixiate_core import outbox as outbox_models
from aixiate_users import models as users_models
from sqlmodel import SQLModel

MODEL_MODULES = (outbox_models, audit_models, users_models, auth_models)


def load_all() -> type[SQLModel]:
    """Returns SQLModel, whose metadata now holds every table."""
    return SQLModel
