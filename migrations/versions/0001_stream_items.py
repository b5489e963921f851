"""Create iii_stream_items.

Revision ID: 0001_stream_items
Revises:
Create Date: 2025-01-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001_stream_items"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "iii_stream_items",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True, autoincrement=True),
        sa.Column("item_key", sa.LargeBinary(16), nullable=False),
        sa.Column("group_key", sa.LargeBinary(16), nullable=False),
        sa.Column("stream_key", sa.LargeBinary(16), nullable=False),
        sa.Column("stream_name", sa.Text, nullable=False),
        sa.Column("group_id", sa.Text, nullable=False),
        sa.Column("item_id", sa.Text, nullable=False),
        sa.Column("value", sa.Text, nullable=False),
        sa.UniqueConstraint("item_key", name="uq_iii_stream_items_item_key"),
    )
    op.create_index("ix_iii_stream_items_group", "iii_stream_items", ["group_key", "id"])
    op.create_index("ix_iii_stream_items_stream", "iii_stream_items", ["stream_key", "group_key"])


def downgrade() -> None:
    op.drop_index("ix_iii_stream_items_stream", table_name="iii_stream_items")
    op.drop_index("ix_iii_stream_items_group", table_name="iii_stream_items")
    op.drop_table("iii_stream_items")
