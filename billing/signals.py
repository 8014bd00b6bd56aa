"""What billing tells the layers above it (billing imports no agents: they listen here).

* ``budget_threshold_reached``: a monthly budget alert is recorded (``tenant_id``, ``alert_id``).
  The tenant webhooks (``agents.webhooks``) turn it into one ``budget.threshold`` delivery per
  subscribed endpoint, keyed per endpoint and event: a repeated signal adds nothing. Sent by
  ``billing.budgets`` until every receiver has succeeded once.
"""

from __future__ import annotations

from django.dispatch import Signal

budget_threshold_reached = Signal()
