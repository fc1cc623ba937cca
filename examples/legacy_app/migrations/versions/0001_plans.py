"""Plans, with the two every installation starts with (seed data).

Revision ID: 0001
Revises:
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    plans = op.create_table(
        "plans",
        sa.Column("code", sa.String(20), primary_key=True),
        sa.Column("name", sa.String(50), nullable=False),
        sa.Column("max_notes", sa.Integer, nullable=False),
    )
    op.bulk_insert(plans, [
        {"code": "free", "name": "Free", "max_notes": 3},
        {"code": "pro", "name": "Pro", "max_notes": 1000},
    ])


def downgrade() -> None:
    op.drop_table("plans")
