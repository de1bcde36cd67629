"""Index the send times the dashboard and the activity log filter on

Revision ID: 0002
Revises: 0001
"""
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_sends_created", "sends", ["created_at"])
    op.create_index("ix_sends_sent", "sends", ["sent_at"])
    op.create_index("ix_sends_opened", "sends", ["opened_at"])


def downgrade() -> None:
    op.drop_index("ix_sends_opened", table_name="sends")
    op.drop_index("ix_sends_sent", table_name="sends")
    op.drop_index("ix_sends_created", table_name="sends")
