"""${message}

Revision ID: ${up_revision}
Revises: ${down_revision | comma,n}
Create Date: ${create_date}
"""

import sqlalchemy as sa
from alembic import op

from migrations.ops import online
${imports if imports else ""}
revision = ${repr(up_revision)}
down_revision = ${repr(down_revision)}
branch_labels = depends_on = None


@online
def upgrade() -> None:
    """Declare the operations (migrations/ops), e.g. op.add_column_online("tasks", sa.Column(...))."""
    ${upgrades if upgrades else "pass"}


downgrade = upgrade.downgrade
