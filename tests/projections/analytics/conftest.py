"""What the analytics tests share: the SQL box over a private world's store."""

from __future__ import annotations

import pytest

from agentlog.deploy.settings import Settings
from agentlog.projections.analytics import AnalyticsProjection
from agentlog.projections.analytics.queries import SQLBox


@pytest.fixture
def box(isolated: Settings):
    projection = AnalyticsProjection(isolated)
    projection.setup()
    yield SQLBox(isolated)
    projection.close()
